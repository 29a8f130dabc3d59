# jwt-proxy-wasm. `make help` lists the targets.
HTTP_PORT ?= 8080
ADMIN_PORT ?=
ECHO_PORT ?= 8081
UPSTREAM ?=
export HTTP_PORT ADMIN_PORT ECHO_PORT UPSTREAM CLUSTERS

WASM_TARGET := wasm32-wasip1
WASM_DIR := target/$(WASM_TARGET)/release
# The conformance suite's fixture filters: one crate a directory, named as it.
CONFORMANCE := $(patsubst %,-p %,$(notdir $(wildcard tests/fixtures/conformance/*)))
FILTER_WASM := $(WASM_DIR)/jwt_filter.wasm
CARGO ?= cargo
# The proxy-wasm SDK exports every ABI callback; Envoy calls each exported one
# per request (the body ones per chunk). Our filters only look at headers and
# keep the SDK's default `on_done`, so the build drops these exports after
# linking: about 1 µs of proxy CPU less per POST (filter/trim/src/lib.rs,
# BENCHMARKS.md variant (c3)).
UNUSED_CALLBACKS := proxy_on_request_body proxy_on_request_trailers proxy_on_response_body proxy_on_response_trailers proxy_on_done
TRIM = $(CARGO) run --quiet -p trim-exports --
# Reproducible module (SPEC section 8): the same bytes from any checkout
# directory and any cargo home. Set for the wasm target only, so the native
# builds (wasmtime) keep their flags and their cache.
CARGO_HOME_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)
WASM_RUSTFLAGS := --remap-path-prefix=$(CURDIR)=/build --remap-path-prefix=$(CARGO_HOME_DIR)=/cargo
export CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS := $(WASM_RUSTFLAGS)

.PHONY: help build wasm fixtures toolchain envoy echo-upstream run run-host test lint validate up down bench soak clean oci wasm-rustflags verifier reload
.PHONY: check-deploy
# The venv of deploy/check-schemas.py (make check-deploy, the oci:: tests).
CHECK_VENV := target/check-venv
# The project's Python venv (Envoy when none is on PATH; PyJWT for the tests).
PY_VENV := .venv

help:
	@echo "make build      the filter (.wasm, release) and the host binaries"
	@echo "make run        echo upstream + Envoy with the filter on HTTP_PORT (default 8080)"
	@echo "                UPSTREAM=host:port uses that upstream instead of the echo one"
	@echo "                WASM_URL=http://... WASM_SHA256=hex: Envoy fetches the module over HTTP"
	@echo "make run-host   the same with the test host instead of Envoy"
	@echo "make test       every test, Envoy end-to-end tests included"
	@echo "make lint       cargo fmt --check, clippy -D warnings, cargo doc -D warnings"
	@echo "make validate   envoy --mode validate on every Envoy config in the repo"
	@echo "make reload     apply the filter configuration to the running make run (same HTTP_PORT)"
	@echo "make verifier   envoy/verifier.yaml: the upstream's jwt_authn filter for the key ring"
	@echo "                JWKS_URL=http://host:port/.well-known/jwks.json, or LOCAL=1 (inline)"
	@echo "make up         the same system under docker compose or podman-compose, detached,"
	@echo "                on 127.0.0.1:HTTP_PORT (ENVOY_IMAGE, BASE_IMAGE); make down removes it"
	@echo "make oci        OCI image of the module (target/oci/), deploy/ manifests rendered"
	@echo "make check-deploy  make oci, then its manifests against the CRD and Kubernetes schemas"
	@echo "make bench      benchmarks, writes BENCHMARKS.md (ROUNDS=, DURATION=)"
	@echo "make soak       1,000,000 POSTs through Envoy + filter (SOAK_REQUESTS=)"
	@echo "make sign-time  the time to sign one token per algorithm in V8 (node), RUNS=5"

toolchain:
	rustup target add $(WASM_TARGET)

# Binaryen's wasm-opt (npm's `binaryen`: its own Wasm build, run by node) after
# the trim: -Oz takes a fifth off the filter (ES256 and EdDSA sign as fast in V8;
# docs/identity.md, "Cost"). It runs once per module cargo links
# (filter/post-link.sh). The features are those rustc already emits for
# wasm32-wasip1, so none is added.
BINARYEN_VERSION := 132.0.0
BINARYEN_DIR := target/binaryen
WASM_OPT := $(BINARYEN_DIR)/node_modules/.bin/wasm-opt
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue

$(BINARYEN_DIR)/.installed-$(BINARYEN_VERSION):
	mkdir -p $(BINARYEN_DIR)
	npm install --prefix $(BINARYEN_DIR) --no-save --no-package-lock --no-audit --no-fund binaryen@$(BINARYEN_VERSION)
	touch $@

wasm: toolchain $(BINARYEN_DIR)/.installed-$(BINARYEN_VERSION)
	$(CARGO) build --release --target $(WASM_TARGET) -p jwt-filter
	TRIM='$(TRIM)' UNUSED_CALLBACKS='$(UNUSED_CALLBACKS)' filter/post-link.sh $(FILTER_WASM) $(WASM_OPT) $(WASM_OPT_FLAGS)

# make sign-time: one token signed per algorithm in V8 (node's WASI), the
# filter's release profile (filter/sign-time). RUNS= runs of 5 rounds.
SIGN_TIME_WASM := $(WASM_DIR)/sign-time.wasm
.PHONY: sign-time
sign-time: toolchain $(BINARYEN_DIR)/.installed-$(BINARYEN_VERSION)
	$(CARGO) build --release --target $(WASM_TARGET) -p sign-time
	$(WASM_OPT) $(WASM_OPT_FLAGS) $(SIGN_TIME_WASM) -o $(WASM_DIR)/sign-time.opt.wasm
	node --no-warnings filter/sign-time/run.mjs $(WASM_DIR)/sign-time.opt.wasm

fixtures: toolchain
	$(CARGO) build --release --target $(WASM_TARGET) -p noop-filter -p probe-filter -p panic-filter -p abi-fixture $(CONFORMANCE)
	$(TRIM) $(WASM_DIR)/noop_filter.wasm $(UNUSED_CALLBACKS)
	$(TRIM) $(WASM_DIR)/probe_filter.wasm $(UNUSED_CALLBACKS)

build: wasm
	$(CARGO) build --release -p echo-upstream -p test-host

echo-upstream:
	$(CARGO) build --release -p echo-upstream

envoy:
	@envoy/find-envoy.sh >/dev/null

# `run` builds only what it runs (the test host takes minutes to build cold).
run: wasm echo-upstream envoy
	envoy/run.sh envoy

run-host: wasm echo-upstream
	$(CARGO) build --release -p test-host
	envoy/run.sh test-host

test: wasm fixtures envoy echo-static $(CHECK_VENV)/.installed $(PY_VENV)/.pyjwt-installed
	ENVOY_BIN="$$(envoy/find-envoy.sh)" $(CARGO) test --workspace

lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(WASM_TARGET) -p jwt-filter -p noop-filter -p probe-filter -p panic-filter -p abi-fixture $(CONFORMANCE) -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

# The upstream's Envoy jwt_authn filter for the key ring of the filter
# configuration (PLUGIN_CONFIG_FILE, default envoy/filter-config.json); it
# holds the HMAC keys (mode 0600). Asymmetric keys: fetched from JWKS_URL
# (default: this make run's, on HTTP_PORT), or inline with LOCAL=1.
VERIFIER_OUT ?= envoy/verifier.yaml
JWKS_URL ?=
LOCAL ?=
verifier:
	$(CARGO) run --quiet -p jwt-verifier -- --config "$${PLUGIN_CONFIG_FILE:-envoy/filter-config.json}" --out "$(VERIFIER_OUT)" \
	  --http-port "$(HTTP_PORT)" $(if $(JWKS_URL),--jwks-url "$(JWKS_URL)") $(if $(LOCAL),--local)

# A new filter configuration for the `make run` on HTTP_PORT, without a
# restart (PLUGIN_CONFIG or PLUGIN_CONFIG_FILE, as `make run` reads it).
reload:
	envoy/reload.sh

validate: wasm envoy
	envoy/validate.sh

# `make up`: envoy/docker-compose.yml under `docker compose` where a Docker
# engine answers, else podman-compose (envoy/compose.sh, docs/compose.md).
# The echo runs in BASE_IMAGE as a static (musl) binary built here.
ECHO_STATIC_TARGET := x86_64-unknown-linux-musl
.PHONY: echo-static
echo-static:
	rustup target add $(ECHO_STATIC_TARGET)
	$(CARGO) build --release --target $(ECHO_STATIC_TARGET) -p echo-upstream

up: wasm echo-static
	envoy/compose.sh up

down:
	envoy/compose.sh down

clean:
	$(CARGO) clean

# OCI image of the trimmed module, no Docker engine (umoci; deploy/oci.sh):
# layout, tarball, digests and rendered deploy/ manifests in target/oci/.
# OCI_IMAGE=registry/name OCI_TAG=tag name the image in the manifests.
oci: wasm
	deploy/oci.sh

# The manifests `make oci` renders, against the schemas a cluster enforces:
# the CRDs in ../shared/schemas (SCHEMAS_DIR) for Istio's and Envoy Gateway's
# kinds, kubernetes-validate's for the core ones (deploy/check-schemas.py).
# Its Python packages, pinned, go into a venv of their own ($(CHECK_VENV)).
SCHEMAS_DIR ?= ../shared/schemas
$(CHECK_VENV)/.installed: deploy/check-schemas.requirements.txt
	rm -rf $(CHECK_VENV)
	python3 -m venv $(CHECK_VENV)
	$(CHECK_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

# PyJWT with `cryptography` (EdDSA, ES256) for the identity tests
# (tests/pyjwt_verify.py), pinned, in the project's .venv: installed whether
# or not an Envoy came from there (find-envoy.sh makes the venv only when no
# `envoy` is on PATH). PY_VENV is set at the top: `test` names it.
.PHONY: pyjwt
pyjwt: $(PY_VENV)/.pyjwt-installed
$(PY_VENV)/.pyjwt-installed: tests/pyjwt.requirements.txt
	[ -x $(PY_VENV)/bin/python ] || python3 -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

check-deploy: oci $(CHECK_VENV)/.installed
	$(CHECK_VENV)/bin/python deploy/check-schemas.py --schemas $(SCHEMAS_DIR) target/oci/deploy

# The wasm RUSTFLAGS this checkout builds with (the reproducibility test).
wasm-rustflags:
	@echo '$(WASM_RUSTFLAGS)'

# What the filter costs against Envoy alone and nginx + Lua, and how it
# scales (connections, threads, bodies, workers; tests/bench/bench.py says
# the knobs); writes BENCHMARKS.md (README.md links it).
# ROUNDS=10 DURATION=4 (seconds per round) by default, about 20 minutes.
bench: toolchain envoy
	python3 tests/bench/bench.py

# Soak (issue 5): SOAK_REQUESTS POSTs over SOAK_CONNECTIONS persistent
# connections through Envoy + filter (release test build), stopping after
# SOAK_MAX_SECONDS. `make test` runs the same test with 20,000.
SOAK_REQUESTS ?= 1000000
SOAK_CONNECTIONS ?= 64
SOAK_MAX_SECONDS ?= 1800
soak: wasm envoy
	SOAK_REQUESTS=$(SOAK_REQUESTS) SOAK_CONNECTIONS=$(SOAK_CONNECTIONS) SOAK_MAX_SECONDS=$(SOAK_MAX_SECONDS) \
	  ENVOY_BIN="$$(envoy/find-envoy.sh)" \
	  $(CARGO) test --release -p jwt-proxy-tests --test e2e -- --exact soak::posts_are_all_signed_once --nocapture
