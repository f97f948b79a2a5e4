"""Watch a server's start as it happens: ``fidoctor run -- CMD`` and ``fidoctor watch --pid``.

The pieces, one concern each:
  deadlines.py  the clocks that will kill this start (vLLM, SGLang, the user's), read from
                argv and environment
  stream.py     the server's output as it passes: fatal lines recognised (a hook for the
                serverlog matchers)
  tap.py        the forwarder that copies the server's stdout/stderr to ours and to us; it
                outlives fidoctor, so the server never loses its output if we die
  observe.py    one look at the server's tree: builds (module, progress, CPU, RSS), lock
                waits and their holders, stalls; its state is plain data (``watch --once``
                keeps it between probe runs)
  events.py     what we say: ``fidoctor:`` lines on stderr and/or JSON lines (``--events``)
  session.py    the loop: ticks, deadlines, stall → the same diagnosis as ``diagnose --pid``,
                ``--on-stall report|exit``, the child's exit code
"""
