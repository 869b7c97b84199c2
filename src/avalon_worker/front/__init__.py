"""The front door: Avalon's listener API over HTTP in front of a worker's ZMQ endpoint.

`api` (the four methods, no I/O), `listener` (its HTTP shell: `http_server`, bounded by `http_guard`),
`pump` (store → worker endpoint → store), `door` (the front-door process as `serve` starts and
supervises it), `service` (what runs in the front-door process and in a stateless listener),
and `listener_client` (a requester over the listener's HTTP API). The store they share with
other hosts is a package of its own, beside this one. Nothing is imported here: `serve`
loads `door` alone, and the front-door process the rest.
"""
