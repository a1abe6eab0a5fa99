# make test is what CI runs (.ci/run) and what the README tells developers to
# run. It must stay under 25 minutes on a 2-core machine.
GO ?= go
FUZZTIME ?= 20s

.PHONY: test vet unit race fuzz build bench e2e bench-nbd

build:
	$(GO) build ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

race:
	$(GO) test -race -timeout 20m ./...

fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) .ci/fuzz.sh

test: vet race fuzz

# End-to-end tests only: the shale binary against real NBD clients and the
# kernel client in a VM (see test/e2e/doc.go). Part of race, so of test.
e2e:
	$(GO) test -race -count=1 -timeout 20m -v ./test/e2e/

# NBD front end against nbdkit memory (needs ../shared/peerbench or
# PEERBENCH_DIR); about 10 minutes with the default 5 rounds.
bench-nbd:
	bench/nbd-vs-nbdkit.sh
