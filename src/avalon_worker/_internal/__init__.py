"""Internal and unstable: the pool's transport, scheduler and worker-process side.

Nothing here is public API; import `avalon_worker.pool` instead. `zmtp` and `router` are the
endpoint (ZMTP 3 over plain sockets), `framing` the one message format between the supervisor
and its worker processes, `scheduler` every decision of the pool with no I/O, `loop` the epoll
loop that carries those decisions out, and `child` the body of a worker process.
"""
