# The README's two commands are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UKEDGE := $(VENV)/bin/ukedge
# The other architecture images are built for (cross) and run emulated: arm64 on an x86_64 host.
# Its Debian packages are downloaded, not installed, for its python runtime (multiarch).
ifeq ($(shell uname -m),x86_64)
FOREIGN_ARCH := arm64
CROSS_PACKAGES := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-system-arm
else
FOREIGN_ARCH := amd64
CROSS_PACKAGES := gcc-x86-64-linux-gnu libc6-dev-amd64-cross qemu-system-x86
endif
# Debian packages the platform and its tests use (qemu, kernel build, static init, interop
# tools, erofs-utils for the shared read-only runtime image, and the cross compiler, its static
# libc and QEMU for the other architecture).
DEB_PACKAGES := qemu-system-x86 qemu-utils linux-source-6.1 build-essential flex bison bc \
	libelf-dev libssl-dev musl-tools cpio skopeo python3.11 python3.11-venv zstd xz-utils docker-registry \
	erofs-utils chromium chromium-driver curl mosquitto postgresql runc $(CROSS_PACKAGES)
# What `make bench-compare` adds: the other container runtimes and the full VM's image builder.
COMPARE_PACKAGES := crun podman debootstrap e2fsprogs
PYTEST_ARGS ?=

.PHONY: all deps venv kernel qemu-slim test test-fast demo lint bench bench-compare clean

all: venv

# Idempotent: the foreign architecture is added once, and apt's lists are refreshed only when
# they do not know its packages yet (build/_python_debs.py downloads them at build time).
deps:
	@if ! apt-cache show python3.11-minimal:$(FOREIGN_ARCH) >/dev/null 2>&1; then \
		echo "enabling Debian's $(FOREIGN_ARCH) packages (multiarch) for that python runtime"; \
		dpkg --print-foreign-architectures | grep -qx $(FOREIGN_ARCH) || dpkg --add-architecture $(FOREIGN_ARCH); \
		apt-get update -qq; \
	fi
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Order-only on deps: a fresh Debian needs python3.11-venv before `python3 -m venv` works.
$(VENV)/.installed: pyproject.toml | deps
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Both architectures' kernels, built once per machine and cached (~9 min each on 2 cores).
kernel: deps venv
	$(UKEDGE) kernel build --profile minimal
	$(UKEDGE) kernel build --profile minimal --platform linux/$(FOREIGN_ARCH)

# A QEMU with only what the guests use, built from the node's own Debian package (~2.5 min on
# 2 cores, once per package version): a node runs it when UKEDGE_QEMU names it, the tests boot
# it, and the boot and density benches measure it beside Debian's (docs/operations.md).
qemu-slim: deps venv
	scripts/qemu-slim/build.sh "$$($(PY) -c 'from ukedge import paths; print(paths.slim_qemu_dir())')"

# The other architecture's kernel builds in the background while the tests that do not need it
# run (a test run leaves much of a core idle on 2 cores); the tests that need it (marked
# foreign_arch) run last and wait on the build's lock. On a new machine that saves most of a
# kernel build; with both kernels cached it costs nothing.
test: deps venv qemu-slim
	$(UKEDGE) kernel build --profile minimal
	@nice -n 5 $(UKEDGE) kernel build --profile minimal --platform linux/$(FOREIGN_ARCH) \
		> .foreign-kernel.log 2>&1 & build=$$!; \
	$(VENV)/bin/pytest $(PYTEST_ARGS); status=$$?; \
	if ! wait $$build; then \
		echo "the $(FOREIGN_ARCH) kernel build failed (.foreign-kernel.log):"; tail -n 20 .foreign-kernel.log; status=1; \
	fi; \
	exit $$status

test-fast: venv
	$(VENV)/bin/pytest -m 'not vm and not interop and not kernel and not fuzz' $(PYTEST_ARGS)

demo: deps venv kernel
	bash scripts/demo.sh

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: deps venv kernel qemu-slim
	$(PY) bench/boot.py
	$(PY) bench/hub.py
	$(PY) bench/density.py
	$(PY) bench/ondemand.py
	$(PY) bench/cli.py
	$(PY) bench/sign.py
	$(PY) bench/migrate.py

# The same app as unikernel, container, full VM and process (issue 14); the report lands in
# docs/compare/. Target-specific: deps installs COMPARE_PACKAGES too when this target runs it.
bench-compare: DEB_PACKAGES += $(COMPARE_PACKAGES)
bench-compare: deps venv kernel
	nice $(UKEDGE) bench compare --out docs/compare

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
