"""Build once, verify everywhere: cache bundles for ``fidoctor cache export | import | verify``.

* ``ninjafiles``: ninja's ``.ninja_log`` (v5–v7 and their command hashes) and
  ``.ninja_deps`` (v4), read and written byte for byte as ninja does.
* ``graph``: a module's edges and expanded commands, from the real ninja.
* ``manifest``: what a bundle promises per module (digests, log, deps, inputs).
* ``bundle``: the tar (optionally zstd), written plainly, read with suspicion.
* ``target``: the facts a bundle is checked against; ``paths``: the rewrite
  of builder paths into the target's.
* ``export``, ``importer``, ``verify``: the three commands' plain code.
"""
