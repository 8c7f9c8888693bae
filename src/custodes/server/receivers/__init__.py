"""Webhook receivers: one module per shape a sender really posts, each turning a body into a Delivery."""
