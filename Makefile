# qrsys: run `make` for the list of targets.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard protos/qrsys/v1/*.proto)
STUBS  := qrsys_grpc/v1

.DEFAULT_GOAL := help
BUF_AGAINST ?= .git\#branch=main,subdir=protos

.PHONY: help install run migrate test bench lint format proto proto-check proto-lint proto-breaking docs clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## Create .venv and install qrsys with its dev tools

run: $(STAMP) ## Migrate and serve on QRSYS_LISTEN_ADDRESS (embedded PostgreSQL if QRSYS_DATABASE_URL is unset)
	$(BIN)/qrsys-server --migrate

migrate: $(STAMP) ## Upgrade the database QRSYS_DATABASE_URL names to the newest schema
	$(BIN)/qrsys-server --migrate-only

test: $(STAMP) ## Run the tests against QRSYS_TEST_DATABASE_URL or an embedded PostgreSQL
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## Benchmark against a bare gRPC server (about 7 minutes; BENCH_ARGS=--help)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP) proto-lint ## ruff, mypy strict and buf lint
	$(BIN)/ruff check qrsys_grpc tests migrations docs bench
	$(BIN)/ruff format --check qrsys_grpc tests migrations docs bench
	$(BIN)/mypy

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix qrsys_grpc tests migrations docs bench
	$(BIN)/ruff format qrsys_grpc tests migrations docs bench

# protoc names the generated modules qrsys.v1.x_pb2 (in the gRPC stubs'
# imports and in the messages' __module__, which pickling needs); the stubs
# live in qrsys_grpc.v1, so those names are rewritten to match.
proto: $(STAMP) ## Regenerate the Python stubs in qrsys_grpc/v1 from protos/
	rm -rf $(STUBS) .proto-out && mkdir -p .proto-out $(STUBS)
	$(BIN)/python -m grpc_tools.protoc -I protos \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--python_out=.proto-out --grpc_python_out=.proto-out \
		--mypy_out=.proto-out --mypy_grpc_out=.proto-out \
		$(PROTOS)
	cp .proto-out/qrsys/v1/* $(STUBS)/
	sed -i -e 's/^from qrsys\.v1 import/from qrsys_grpc.v1 import/' \
		-e "s/(DESCRIPTOR, 'qrsys\.v1\./(DESCRIPTOR, 'qrsys_grpc.v1./" \
		$(STUBS)/*.py $(STUBS)/*.pyi
	printf '"""Stubs generated from protos/qrsys/v1 by `make proto`."""\n' > $(STUBS)/__init__.py
	rm -rf .proto-out

docs: $(STAMP) ## Regenerate docs/api.md from the proto comments
	$(BIN)/python docs/generate_api.py > docs/api.md

proto-check: proto docs ## Fail when the committed stubs or docs/api.md differ from protos/
	git diff --exit-code --stat -- $(STUBS) docs/api.md
	@test -z "$$(git status --porcelain -- $(STUBS) docs/api.md)" || { git status --short -- $(STUBS) docs/api.md; exit 1; }

proto-lint: $(STAMP) ## buf lint (STANDARD and COMMENTS rules)
	cd protos && ../$(BIN)/buf lint

proto-breaking: $(STAMP) ## buf breaking against main (BUF_AGAINST=... to change)
	$(BIN)/buf breaking protos --against '$(BUF_AGAINST)'

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
