# segment-sink: `make run` starts the sink with a working PostgreSQL; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

LOCAL_PG     := postgres://postgres@127.0.0.1:5432
DEV_DB       := segment_sink
COMPOSE_URL  := postgres://segment:segment@127.0.0.1:5432/segment_sink?sslmode=disable
# The secret `make run` signs its example with, unless SHARED_SECRET is set.
DEV_SECRET   := dev-secret
SAMPLE_EVENT := {"type":"track","userId":"user-1","event":"Signed Up","properties":{"plan":"pro"}}

# Prints a DATABASE_URL for development: the one set, else the local server at 127.0.0.1:5432,
# else the Postgres of docker-compose.yml (started and waited for).
define find_database
if [ -n "$$DATABASE_URL" ]; then echo "$$DATABASE_URL"; \
elif psql "$(LOCAL_PG)/postgres?sslmode=disable" -Atc 'SELECT 1' >/dev/null 2>&1; then \
  psql "$(LOCAL_PG)/postgres?sslmode=disable" -Atc "SELECT 1 FROM pg_database WHERE datname = '$(DEV_DB)'" | grep -q 1 \
    || psql "$(LOCAL_PG)/postgres?sslmode=disable" -qc 'CREATE DATABASE $(DEV_DB)' >&2; \
  echo "$(LOCAL_PG)/$(DEV_DB)?sslmode=disable"; \
elif docker info >/dev/null 2>&1; then \
  docker compose up -d --wait postgres >&2 && echo "$(COMPOSE_URL)"; \
else \
  echo "make run: no PostgreSQL found. Set DATABASE_URL, start PostgreSQL on 127.0.0.1:5432, or install Docker." >&2; \
fi
endef

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: run
run: ## start the sink on :8080 against a working PostgreSQL, with readable logs
	@url=$$($(find_database)); [ -n "$$url" ] || exit 1; \
	secret=$${SHARED_SECRET:-$(DEV_SECRET)}; addr=$${LISTEN_ADDR:-:8080}; \
	body='$(SAMPLE_EVENT)'; \
	sig=$$(printf '%s' "$$body" | openssl dgst -sha1 -hmac "$${secret%%,*}" 2>/dev/null | sed 's/^.*= *//'); \
	echo "segment-sink: database $${url%%\?*}"; \
	echo "segment-sink: send a signed test event with"; \
	echo "  curl -sS -X POST http://localhost:$${addr##*:}/webhook -H 'Content-Type: application/json' -H 'X-Signature: $$sig' -d '$$body'"; \
	echo "segment-sink: then see it with  psql '$$url' -c 'SELECT * FROM tracks'"; \
	DATABASE_URL="$$url" SHARED_SECRET="$$secret" LOG_FORMAT=$${LOG_FORMAT:-text} exec go run ./cmd/segment-sink serve

.PHONY: test
test: ## run all unit and integration tests against a real PostgreSQL
	@if [ -z "$$TEST_DATABASE_URL" ] && psql "$(LOCAL_PG)/postgres?sslmode=disable" -Atc 'SELECT 1' >/dev/null 2>&1; then \
	  export TEST_DATABASE_URL="$(LOCAL_PG)/postgres?sslmode=disable"; fi; \
	go vet ./... && go test -race -count=1 ./...

.PHONY: bench
bench: build ## measure the sink against its ceilings (HTTP, COPY, naive INSERT); writes bench-results.json
	@url=$${BENCH_DATABASE_URL:-$(LOCAL_PG)/postgres?sslmode=disable}; \
	go test -run '^$$' -bench . -benchmem ./internal/... && \
	BENCH_DATABASE_URL="$$url" go run ./cmd/sinkbench -sink bin/segment-sink $(BENCH_FLAGS)

# Each fuzz target, for FUZZTIME each (the seed corpora in testdata/fuzz also run in `make test`).
FUZZTIME ?= 10s
FUZZ_TARGETS := ./internal/event:FuzzDecode ./internal/event:FuzzScanner ./internal/httpapi:FuzzSignature ./internal/store:FuzzStoreRoundTrip

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (default 10s) against a real PostgreSQL
	@if [ -z "$$TEST_DATABASE_URL" ] && psql "$(LOCAL_PG)/postgres?sslmode=disable" -Atc 'SELECT 1' >/dev/null 2>&1; then \
	  export TEST_DATABASE_URL="$(LOCAL_PG)/postgres?sslmode=disable"; fi; \
	for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} for $(FUZZTIME)"; \
	  go test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}" || exit 1; \
	done

.PHONY: build
build: ## build bin/segment-sink
	CGO_ENABLED=0 go build -trimpath -o bin/segment-sink ./cmd/segment-sink
