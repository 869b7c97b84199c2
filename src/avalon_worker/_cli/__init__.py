"""The command line: `avalon-worker COMMAND` and the original worker's `wo-processor`.

`main` builds the parser (`parser`: every command's options, cheap to import) and imports the
chosen command's module (`serve`, `signup`, `submit`, `run_orders`, `verify`, `demo`, `config`,
`listener`, `pump`, `store`) only then, so that `serve`, and every worker process it forks,
carries nothing of the requester side or the verifier. `front_door` is the front-door process
that `serve` starts. Logging is configured in `console` alone. Nothing is imported here.
"""
