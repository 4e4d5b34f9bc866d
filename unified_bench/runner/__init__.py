"""The round-trip runner: dataset -> adapter.caption -> adapter.generate -> run directory -> scoring.

Modules (imported on use; ``eval`` pulls in the scoring engine and torch):

- ``protocol``: the paper's instruction and settings as data; ``seed_for(global_seed, sample_id)``
- ``store``: the run directory on disk (atomic images, append-only JSONL, resume state)
- ``eval``: ``EvalConfig`` and ``run_eval`` (``unified-bench eval`` as a library call)
- ``distributed``: ``--shard I/N``, torchrun / accelerate / SLURM detection, the end barrier
- ``merge``: ``merge_shards`` (``unified-bench merge``)
- ``commands``: the CLI commands ``eval``, ``merge``, ``serve``, ``models``
"""
