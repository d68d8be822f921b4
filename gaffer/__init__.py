"""gaffer: a process manager that grows from one host to a cluster."""

__version__ = "0.1.0"
