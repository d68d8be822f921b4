"""etcd for a highly available control plane: a v3 client and leader election (issue 13).

Why etcd's JSON gateway through aiohttp and not ``aetcd``: aiohttp is already a dependency,
the gateway (``/v3/...`` on every client port since etcd 3.4, Debian's ``etcd-server``) serves
the whole v3 API gaffer needs (kv, txn, lease, watch, status) as plain JSON, and each call is an
ordinary HTTP request we bound, fail over and map to gaffer's errors ourselves. ``aetcd`` would
add grpcio and protobuf (tens of MB of native wheels, their own threads and event-loop
integration under uvloop) for the same calls; gRPC's only gain here, multiplexed keepalive and
watch streams on one connection, does not matter at one election and a few watches.

- ``wire``: the gateway's JSON both ways (base64 bytes, int64 as strings), pure
- ``refusals``: what an error answer means (try another member, or refused); endpoints
- ``client``: EtcdClient, the calls over several endpoints with failover and timeouts
- ``election``: leader election as a pure state machine (time passed in)
- ``leadership``: Leadership, the shell that runs it against etcd (keepalive, campaign, watch)
"""
