# SPDX-License-Identifier: MIT
# moed build. `make setup` installs dependencies, `make` builds, `make test`
# runs every test (running setup first on a fresh clone), `make bench` runs
# the benchmarks. CUDA=0 skips the CUDA library; SAN=1 adds ASan+UBSan.

CC      ?= gcc
CLANG   ?= clang
BUILD   ?= build
CUDA    ?= 1
SAN     ?= 0
OPT     ?= -O2

CFLAGS_BASE = -std=gnu11 -g $(OPT) -Wall -Wextra -Wno-unused-parameter -Wshadow \
              -Wstrict-prototypes -fno-strict-aliasing -I. -MMD -MP -pthread -D_GNU_SOURCE
ifeq ($(SAN),1)
CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDSAN = -fsanitize=address,undefined
CUDA = 0
BUILD = build-san
endif
CFLAGS  ?=
CFLAGS  += $(CFLAGS_BASE)
LDLIBS  = -luv -lllhttp -lcjson -luring -lpcre2-8 -lutf8proc -lm -ldl -pthread $(LDSAN)

# Files named *_avx2.c / *_avx512.c are compiled for that instruction set and
# only called after a run-time CPUID check.
AVX2_FLAGS   = -mavx2 -mfma -mf16c
AVX512_FLAGS = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni -mavx512bf16

LIB_SRC  = $(wildcard common/*.c kernels/*.c kernels/cpu/*.c engine/*.c cache/*.c predictor/*.c) \
           $(filter-out server/main.c,$(wildcard server/*.c))
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOLS    = $(patsubst tools/%.c,$(BUILD)/%,$(filter-out tools/%_lib.c,$(wildcard tools/*.c)))
TOOL_LIB = $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/*_lib.c))
TESTS    = $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
FUZZERS  = $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_SRC = $(wildcard kernels/cuda/*.cu)
ifneq ($(CI),)
CUDA_ARCHS ?= -gencode arch=compute_90,code=sm_90
else
CUDA_ARCHS ?= -gencode arch=compute_75,code=sm_75 -gencode arch=compute_80,code=sm_80 \
  -gencode arch=compute_86,code=sm_86 -gencode arch=compute_89,code=sm_89 \
  -gencode arch=compute_90,code=sm_90 -gencode arch=compute_120,code=sm_120 \
  -gencode arch=compute_120,code=compute_120
endif
CUDA_LIB =
ifeq ($(CUDA),1)
ifneq ($(NVCC),)
ifneq ($(CUDA_SRC),)
CUDA_LIB = $(BUILD)/libmoed-cuda.so
endif
endif
endif

.PHONY: all setup test bench fuzz clean models tests fuzzers
# Keep intermediate objects (the fuzzers' clang objects), so nothing is rebuilt needlessly.
.SECONDARY:
all: $(BUILD)/moed $(TOOLS) $(CUDA_LIB)

# `make setup`: dependencies, the build, and the demo model `moed serve`
# serves by default (random weights, real Qwen3 tokenizer and template).
setup: .setup-stamp
	$(MAKE) all $(BUILD)/models/demo.gguf
.setup-stamp: scripts/setup.sh package.json package-lock.json
	bash scripts/setup.sh
	touch $@
$(BUILD)/models/demo.gguf: $(BUILD)/mkmodel
	@mkdir -p $(dir $@)
	$(BUILD)/mkmodel --arch qwen3moe --preset demo --type q8_0 --name moed-demo-qwen3moe \
	    --vocab qwen3 -o $@.tmp && mv $@.tmp $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2_FLAGS) -c $< -o $@

$(BUILD)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX512_FLAGS) -c $< -o $@

$(BUILD)/libmoed.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/moed: $(BUILD)/server/main.o $(BUILD)/libmoed.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%: tools/%.c $(TOOL_LIB) $(BUILD)/libmoed.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(TOOL_LIB) $(BUILD)/libmoed.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(TOOL_LIB) $(BUILD)/libmoed.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DTESTING -o $@ $< $(TOOL_LIB) $(BUILD)/libmoed.a -lcmocka $(LDLIBS)

# libFuzzer harnesses: clang, with ASan and UBSan, over the library compiled
# again with clang (objects in $(BUILD)/fuzzobj, ISA flags as above).
FUZZ_CFLAGS = -std=gnu11 -g -O1 -I. -D_GNU_SOURCE -pthread -fsanitize=address,undefined
FUZZ_OBJ = $(LIB_SRC:%.c=$(BUILD)/fuzzobj/%.o)
$(BUILD)/fuzzobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(BUILD)/fuzzobj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) $(AVX2_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(BUILD)/fuzzobj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) $(AVX512_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(LDLIBS)

$(CUDA_LIB): $(CUDA_SRC) $(wildcard kernels/cuda/*.cuh) kernels/backend.h
	@mkdir -p $(dir $@)
	$(NVCC) -O2 -std=c++17 -I. -Xcompiler -fPIC,-fvisibility=hidden -shared $(CUDA_ARCHS) -o $@ $(CUDA_SRC)

tests: $(TESTS) $(TOOLS) $(BUILD)/moed
fuzzers: $(FUZZERS)

# Test models are written by tools/mkmodel (fixed seeds) into $(BUILD)/models.
models: $(BUILD)/mkmodel
	bash tests/make_models.sh $(BUILD)

test: .setup-stamp
	$(MAKE) all tests fuzzers $(BUILD)/models/demo.gguf
	$(MAKE) models
	BUILD=$(BUILD) bash tests/run.sh

fuzz: .setup-stamp fuzzers
	FUZZ_SECONDS=$${FUZZ_SECONDS:-300} BUILD=$(BUILD) bash tests/fuzz/run.sh

bench: .setup-stamp all
	BUILD=$(BUILD) bash bench/run.sh

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
