"""Compile the Triton kernels for a real GPU target (sm_90, Triton's own ptxas) without a GPU: run
every launcher of tdgs.pooling.triton_kernels on CPU tensors with Triton's launch replaced by a
compilation for that target. Triton's interpreter (which the other tests use) never compiles, so
it cannot catch what only the compiler refuses (a kernel reading a global that is not a constexpr,
say). Run by tests/test_triton_compile.py in a process of its own (TRITON_INTERPRET unset);
prints one line per failure and the count.

    python tests/compile_for_gpu.py [--all]     # --all: every dtype, geometry and option
"""

import os
import sys
import traceback

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.compiler import compile as compile_kernel  # noqa: E402
from triton.runtime import jit  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
BACKEND = make_backend(TARGET)
compiled: dict = {}


def compile_instead_of_launch(self, *args, grid, warmup, **kwargs):
    """JITFunction.run, minus the launch (Triton 3.x internals: the binder and _pack_args)."""
    binder = jit.create_function_from_signature(self.signature, self.params, BACKEND)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = self._pack_args(BACKEND, kwargs, bound_args, specialization, options)
    key = (self.fn.__name__, str(signature), str(sorted(constexprs.items())))
    if key not in compiled:
        try:
            compile_kernel(ASTSource(self, signature, constexprs, attrs), target=TARGET, options=options.__dict__)
            compiled[key] = None
        except Exception as error:  # every failure is reported
            cause = error.__cause__ or error
            compiled[key] = (
                f"{self.fn.__name__} {kwargs}: {type(cause).__name__}: {str(cause).strip().splitlines()[-1][:300]}"
            )
            if os.environ.get("TRACEBACK"):
                traceback.print_exception(error)


jit.JITFunction.run = compile_instead_of_launch
from tdgs.pooling import triton_kernels as kernels  # noqa: E402

every = "--all" in sys.argv
dtypes = [torch.float32, torch.bfloat16, torch.float16] if every else [torch.float32]
geometries = (
    [(2, 2, 0, 8, 8), (3, 2, 0, 9, 8), (3, 3, 0, 9, 9), (3, 2, 1, 8, 8)]
    if every
    else [(2, 2, 0, 8, 8), (3, 2, 1, 8, 8)]
)
normalizations = ["none", "l1", "l2", "max"] if every else ["l2"]
rectifiers = ["none", "relu", "softplus"] if every else ["relu"]
seed = torch.zeros((), dtype=torch.int64)
for dtype in dtypes:
    for k, s, p, h, w in geometries:
        x = torch.randn(2, 3, h, w, dtype=dtype)
        out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        theta = torch.rand(3, out_h, out_w)
        grad = torch.randn(2, 3, out_h, out_w, dtype=dtype)
        for normalize in normalizations:
            for mode in ["hard", "soft", "expectation", "argmax"]:
                for rectifier in rectifiers:
                    kernels.tdgs_forward(x, theta, seed, k, s, p, normalize, mode, rectifier, 0.1)
                    kernels.tdgs_backward(grad, x, theta, seed, k, s, p, normalize, mode, rectifier, 0.1)
        for mask in [torch.randn(3, k * k), None]:
            kernels.gated_forward(x, mask, torch.randn(3), k, s, p)
            kernels.gated_backward(grad, x, mask, torch.randn(3), k, s, p)
        for training in [True, False]:
            kernels.stochastic_forward(x, seed, k, s, p, training)
            kernels.stochastic_backward(grad, x, seed, k, s, p, training)
            if s <= k:
                kernels.s3_forward(x, seed, k, s, p, 2 * s, training)
                kernels.s3_backward(grad, x, seed, k, s, p, 2 * s, training)
for window in (1, 4, 9):
    kernels.window_uniforms(seed, 100, window)
kernels.s3_lines(seed, 9, 3, 6, 3, 1)
failures = [message for message in compiled.values() if message]
print("\n".join(failures))
print(f"compiled {len(compiled) - len(failures)} of {len(compiled)} kernel specialisations for sm_90")
sys.exit(1 if failures or not compiled else 0)
