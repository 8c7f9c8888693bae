"""The event bus of a cluster, on RabbitMQ: receivers publish raw events with publisher confirms to a
consistent-hash exchange that routes each by its entity to one of N partition queues (quorum queues, single active
consumer); detection workers own partitions, commit what a batch produced with the partition's state, then
acknowledge."""
