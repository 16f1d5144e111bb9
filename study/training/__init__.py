"""Training of one configuration: the torch-free trial config (`config`), batches over the
shared feature files (`loader`), the per-worker `Session` (`session`), `avstudy train`'s `fit`
(`fit`), metrics.

May import `study.data` and `model`; never Ray or `study.runs`. `config` must stay torch-free:
the spec, the search spaces and the CLI's light commands import it.
"""
