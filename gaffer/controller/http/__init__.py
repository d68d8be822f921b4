"""The controller's HTTP side: the REST API, Server-Sent Events, ``/metrics`` and the dashboard.

It runs on the controller's own event loop and calls the same operations as the ZeroMQ side
(``Api.ops()``), so both interfaces answer alike. Every request but the dashboard's static
files and the OpenAPI document needs a bearer token (``access.py``).
"""
