"""The qrsys benchmark: ``python -m bench`` (see bench/README.md).

Modules: ``load`` (the load generator processes), ``ceiling`` (the bare
health-check server), ``processes`` (database, server processes, RSS),
``fixtures`` (accounts and codes), ``scenarios`` (the plan and the targets),
``profile`` (optional py-spy recordings) and ``report`` (JSON and Markdown).
"""
