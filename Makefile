# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Each sets up what it needs (virtual environment, dependencies, Kafka jars, the local Kubernetes
# control plane built once from the Go module proxy) and reuses it next time.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-cluster test install jars cluster amtemplate lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

jars: $(STAMP)
	@$(PY) -c "from core.broker import ensure_jars; ensure_jars()"

# etcd, kube-apiserver, controller-manager, scheduler, kwok: built once (~8 min on 2 cores), then reused
cluster: $(STAMP)
	@$(PY) -m deploy.cluster.launcher build >/dev/null

# Alertmanager's template package, for Go templates in routing files: built once (~15 s) from the Go module proxy
amtemplate: $(STAMP)
	@$(PY) -m alerts.gotemplate build >/dev/null

demo: jars
	$(VENV)/bin/kubesight demo

# the live demo: a local Kubernetes control plane, its collector and scripted incidents routed to teams
demo-cluster: jars cluster
	$(VENV)/bin/kubesight demo --cluster

# pytest's exit 5 (no tests collected) counts as a failure
test: jars cluster amtemplate
	@$(PY) -m pytest -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest ran no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .cache
