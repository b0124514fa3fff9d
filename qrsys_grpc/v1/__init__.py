"""Stubs generated from protos/qrsys/v1 by `make proto`."""
