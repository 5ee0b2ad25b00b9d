# The two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLASK := $(BIN)/flask --app edc:create_app

.PHONY: serve test test-sqlite test-postgres fuzz install keys clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

keys: $(STAMP)
	$(FLASK) edc keys init --development

serve: keys
	$(FLASK) edc init
	$(FLASK) edc seed-demo --if-empty --study
	@echo ""
	@echo "edc is starting on http://127.0.0.1:8000"
	@echo "  web app:      http://127.0.0.1:8000/   (sign in with a demo account below)"
	@echo "  API docs:     http://127.0.0.1:8000/api/docs/   (OpenAPI: /api/openapi.json)"
	@echo "  log in:       curl -s -X POST http://127.0.0.1:8000/api/v1/auth/login -H 'Content-Type: application/json' \\"
	@echo "                     -d '{\"username\": \"inv.es01\", \"password\": \"ari0001-demo-only\"}'"
	@echo "  demo accounts (one password for all):"
	@$(FLASK) edc demo-logins
	@echo ""
	@# The worker (mailer) runs in the background next to gunicorn and stops when gunicorn exits.
	$(FLASK) edc worker & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(BIN)/gunicorn -c config/gunicorn.conf.py wsgi:app

# The whole suite on SQLite, then on PostgreSQL when EDC_TEST_DATABASE_URL is set; each pass names its ten
# slowest tests, so a slow one is seen (tests/README.md: the whole of .ci/run stays under 25 minutes).
PYTEST := $(BIN)/python -m pytest -W error -p no:cacheprovider --durations=10

test: $(STAMP)
	$(BIN)/ruff check edc tests migrations bench wsgi.py
	$(PYTEST) tests
	@if [ -n "$$EDC_TEST_DATABASE_URL" ]; then \
		echo "== PostgreSQL pass: $$EDC_TEST_DATABASE_URL" ; \
		EDC_TEST_BACKEND=postgresql $(PYTEST) tests ; \
	else \
		echo "== PostgreSQL pass skipped: EDC_TEST_DATABASE_URL is not set" ; \
	fi

# The OpenAPI fuzz test (tests/test_fuzz.py) with many more generated requests per operation than `make test` runs.
FUZZ_EXAMPLES ?= 100

fuzz: $(STAMP)
	EDC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) tests/test_fuzz.py

clean:
	rm -rf $(VENV) .pytest_cache
