"""The demo: a short insider story played through the real pipeline against the sandbox."""
