# Two commands (see README.md). The logic lives in tests/scripts/.
.PHONY: demo test

# Build plugins + host, generate a 1M-row taxi sample, run pipelines/taxi-local.toml.
demo:
	@tests/scripts/demo.sh

# The whole test suite (what .ci/run runs).
test:
	@tests/scripts/test.sh
