# sqlsynth.runbooks: `make demo` brings up the local lab and checks it; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(abspath .)
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
PYTHON ?= python3
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(ROOT)/.build/collections
export PATH := $(BIN):$(PATH)

APT_PACKAGES := git make curl openssl shellcheck postgresql postgresql-contrib redis-server \
	nginx prometheus prometheus-alertmanager pebble supervisor logrotate gunicorn \
	python3-flask python3-psycopg python3-psycopg-pool python3-redis python3-prometheus-client
LINK := .build/collections/ansible_collections/sqlsynth/runbooks

.PHONY: help deps apt venv demo lab-up lab-down health test lint docs docs-check unit sanity \
	molecule integration bench drills build clean

help:
	@echo "make demo   - install what is missing, bring up the local lab, run health_check on it"
	@echo "make test   - every test: lint, docs-check, unit, sanity, lab integration, molecule"
	@echo "make bench  - benchmarks (results in docs/benchmarks.md)"
	@echo "make drills - rehearse every incident on the lab (results in docs/drills.md)"

deps: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "apt: all packages present"; fi

venv: $(BIN)/.deps-stamp $(LINK)

$(BIN)/.deps-stamp: requirements-dev.txt runner/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q -e runner
	touch $@

$(LINK):
	mkdir -p $(dir $(LINK))
	ln -sfn ../../../.. $(LINK)

demo: deps lab-up health

lab-up: deps
	$(BIN)/ansible-playbook playbooks/lab_up.yml

lab-down:
	$(BIN)/ansible-playbook playbooks/lab_down.yml

health:
	$(BIN)/ansible-playbook sqlsynth.runbooks.health_check -i inventories/lab

test: deps lint docs-check unit sanity lab-up molecule integration
	@echo "make test: all stages passed"

lint: deps
	tools/lint.sh

docs: deps
	$(BIN)/python tools/gen_docs.py

docs-check: deps
	$(BIN)/python tools/gen_docs.py --check

unit: deps
	$(BIN)/pytest -n 2 tests/unit

sanity: deps
	tools/sanity.sh

integration: deps
	$(BIN)/pytest tests/integration

molecule: deps
	$(BIN)/molecule test -s health_check

bench: deps
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

drills: deps lab-up
	$(BIN)/python tools/run_drills.py

build: deps
	$(BIN)/ansible-galaxy collection build --force --output-path .build

clean:
	rm -rf .build tests/output .pytest_cache
