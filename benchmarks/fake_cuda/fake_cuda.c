/* A stand-in for the CUDA driver (libcuda.so.1) with no GPU behind it: every call succeeds at once.
 *
 * Used by benchmarks/fake_cuda/build.py to measure and test the *host* side of scratchdet's CUDA
 * backend on a machine without a GPU: Numba's real CUDA path (not its simulator) runs against it,
 * so the Python of a launch, an allocation or a layer can be timed and profiled. Nothing is
 * computed: kernels are never run, "device" memory is host memory from malloc (so copies between
 * host and device work), events report 0 ms. Never report a time taken with it as a GPU time.
 *
 * The functions below are the ones Numba and cuda.core call with output arguments; build.py adds
 * every other driver entry point of the installed cuda-bindings as a stub that returns
 * CUDA_SUCCESS (and names itself on stderr when FAKE_CUDA_TRACE is set), and cuGetProcAddress,
 * through which the bindings find them all. FAKE_CUDA_MEMORY (bytes) limits the memory in use:
 * cuMemAlloc past it fails with CUDA_ERROR_OUT_OF_MEMORY. fake_cuda_launches() counts launches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
typedef int CUresult;
typedef unsigned long long CUdeviceptr;
static int trace_on = -1;
void fc_trace(const char *name) {
  if (trace_on < 0) trace_on = getenv("FAKE_CUDA_TRACE") != NULL;
  if (trace_on) fprintf(stderr, "fake_cuda: %s\n", name);
}
static long long launches = 0;
long long fake_cuda_launches(void) { return launches; }
static void *current_ctx = 0;
static char ctx_storage[64];   /* the one context */
static char cubin[256];        /* what "linking" returns */
static void *fresh(void) { return calloc(1, 64); }  /* a handle: distinct for every library, kernel, stream, event */
#define T fc_trace(__func__)
CUresult cuInit(unsigned flags) { T; return 0; }
CUresult cuDriverGetVersion(int *v) { T; *v = 13000; return 0; }
CUresult cuDeviceGetCount(int *n) { T; *n = 1; return 0; }
CUresult cuDeviceGet(int *d, int ordinal) { T; *d = ordinal; return ordinal == 0 ? 0 : 101; }
CUresult cuDeviceGetName(char *name, int len, int dev) { T; snprintf(name, len, "fake CUDA driver (no GPU)"); return 0; }
CUresult cuDeviceGetUuid(char *uuid, int dev) { T; memset(uuid, 7, 16); return 0; }
CUresult cuDeviceGetUuid_v2(char *uuid, int dev) { T; memset(uuid, 7, 16); return 0; }
CUresult cuDeviceTotalMem(size_t *b, int dev) { T; *b = (size_t)140 << 30; return 0; }
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
  T;
  switch (attr) {
    case 1: *v = 1024; break;            /* max threads per block */
    case 2: case 3: *v = 1024; break;    /* block dims */
    case 4: *v = 64; break;
    case 5: *v = 2147483647; break;      /* grid x */
    case 6: case 7: *v = 65535; break;
    case 8: *v = 49152; break;           /* shared per block */
    case 10: *v = 32; break;             /* warp */
    case 12: *v = 65536; break;          /* regs per block */
    case 13: *v = 1980000; break;        /* clock */
    case 16: *v = 132; break;            /* SMs */
    case 39: *v = 2048; break;           /* threads per SM */
    case 75: *v = 9; break;              /* cc major */
    case 76: *v = 0; break;              /* cc minor */
    case 81: *v = 233472; break;         /* shared per SM */
    case 82: *v = 65536; break;
    case 97: *v = 232448; break;         /* optin shared */
    case 106: *v = 32; break;            /* max blocks per SM */
    default: *v = 1;
  }
  return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { T; *ctx = ctx_storage; return 0; }
CUresult cuDevicePrimaryCtxRelease(int dev) { T; return 0; }
CUresult cuDevicePrimaryCtxReset(int dev) { T; return 0; }
CUresult cuDevicePrimaryCtxGetState(int dev, unsigned *flags, int *active) { T; *flags = 0; *active = 1; return 0; }
CUresult cuCtxPushCurrent(void *ctx) { T; current_ctx = ctx; return 0; }
CUresult cuCtxPopCurrent(void **ctx) { T; if (ctx) *ctx = current_ctx; current_ctx = 0; return 0; }
CUresult cuCtxGetCurrent(void **ctx) { T; *ctx = current_ctx; return 0; }
CUresult cuCtxSetCurrent(void *ctx) { T; current_ctx = ctx; return 0; }
CUresult cuCtxGetDevice(int *d) { T; *d = 0; return 0; }
CUresult cuCtxSynchronize(void) { T; return 0; }
CUresult cuCtxGetApiVersion(void *ctx, unsigned *v) { T; *v = 13000; return 0; }
CUresult cuCtxGetId(void *ctx, unsigned long long *id) { T; *id = 1; return 0; }
CUresult cuCtxGetFlags(unsigned *f) { T; *f = 0; return 0; }
CUresult cuCtxGetStreamPriorityRange(int *lo, int *hi) { T; *lo = 0; *hi = -5; return 0; }
/* memory: host memory, sizes kept for cuMemGetAddressRange and FAKE_CUDA_MEMORY's count; more than
 * MAXA allocations alive at once is out of memory */
#define MAXA 65536
static CUdeviceptr a_ptr[MAXA]; static size_t a_size[MAXA]; static int a_n = 0;
static size_t in_use = 0, limit = 0;
static size_t memory_limit(void) {
  if (!limit) { const char *s = getenv("FAKE_CUDA_MEMORY"); limit = s ? (size_t)strtoull(s, 0, 10) : ((size_t)140 << 30); }
  return limit;
}
CUresult cuMemAlloc(CUdeviceptr *p, size_t n) {
  T;
  if (in_use + n > memory_limit()) return 2; /* CUDA_ERROR_OUT_OF_MEMORY */
  int slot = -1;
  for (int i = 0; i < a_n && slot < 0; i++) if (!a_ptr[i]) slot = i;
  if (slot < 0) { if (a_n == MAXA) return 2; slot = a_n++; }
  void *m = malloc(n ? n : 1); if (!m) return 2;
  in_use += n;
  *p = (CUdeviceptr)m;
  a_ptr[slot] = *p; a_size[slot] = n;
  return 0;
}
CUresult cuMemFree(CUdeviceptr p) {
  T; for (int i = 0; i < a_n; i++) if (a_ptr[i] == p) { a_ptr[i] = 0; in_use -= a_size[i]; break; }
  free((void *)p); return 0;
}
CUresult cuMemGetAddressRange(CUdeviceptr *base, size_t *size, CUdeviceptr p) {
  T; for (int i = 0; i < a_n; i++) if (a_ptr[i] && p >= a_ptr[i] && p < a_ptr[i] + (a_size[i] ? a_size[i] : 1)) {
    if (base) *base = a_ptr[i]; if (size) *size = a_size[i]; return 0; }
  return 1;
}
CUresult cuMemGetInfo(size_t *f, size_t *t) {
  T; *t = memory_limit(); *f = *t - in_use; return 0;
}
CUresult cuMemcpyHtoD(CUdeviceptr d, const void *s, size_t n) { T; memcpy((void *)d, s, n); return 0; }
CUresult cuMemcpyDtoH(void *d, CUdeviceptr s, size_t n) { T; memcpy(d, (void *)s, n); return 0; }
CUresult cuMemcpyDtoD(CUdeviceptr d, CUdeviceptr s, size_t n) { T; memmove((void *)d, (void *)s, n); return 0; }
CUresult cuMemcpyHtoDAsync(CUdeviceptr d, const void *s, size_t n, void *st) { T; memcpy((void *)d, s, n); return 0; }
CUresult cuMemcpyDtoHAsync(void *d, CUdeviceptr s, size_t n, void *st) { T; memcpy(d, (void *)s, n); return 0; }
CUresult cuMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, void *st) { T; memmove((void *)d, (void *)s, n); return 0; }
CUresult cuMemsetD8(CUdeviceptr d, unsigned char v, size_t n) { T; memset((void *)d, v, n); return 0; }
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void *st) { T; memset((void *)d, v, n); return 0; }
CUresult cuMemHostAlloc(void **p, size_t n, unsigned f) { T; *p = malloc(n ? n : 1); return 0; }
CUresult cuMemFreeHost(void *p) { T; free(p); return 0; }
CUresult cuMemHostRegister(void *p, size_t n, unsigned f) { T; return 0; }
CUresult cuMemHostUnregister(void *p) { T; return 0; }
CUresult cuMemHostGetDevicePointer(CUdeviceptr *d, void *p, unsigned f) { T; *d = (CUdeviceptr)p; return 0; }
CUresult cuPointerGetAttribute(void *data, int attr, CUdeviceptr p) {
  T;
  if (attr == 1) *(void **)data = ctx_storage;            /* context */
  else if (attr == 2) *(unsigned *)data = 2;              /* memory type: device */
  else if (attr == 3) *(CUdeviceptr *)data = p;           /* device pointer */
  else if (attr == 9) *(int *)data = 0;                   /* device ordinal */
  else memset(data, 0, 4);
  return 0;
}
/* code: nothing is loaded, nothing runs */
CUresult cuLibraryLoadData(void **lib, const void *code, void *jo, void **jov, unsigned nj, void *lo, void **lov, unsigned nl) { T; *lib = fresh(); return 0; }
CUresult cuLibraryUnload(void *lib) { T; return 0; }
CUresult cuLibraryGetKernel(void **k, void *lib, const char *name) { T; *k = fresh(); return 0; }
CUresult cuLibraryGetGlobal(CUdeviceptr *p, size_t *n, void *lib, const char *name) { T; static long long g[64]; *p = (CUdeviceptr)g; *n = 8; return 0; }
CUresult cuKernelGetFunction(void **f, void *k) { T; *f = fresh(); return 0; }
CUresult cuKernelGetName(const char **n, void *k) { T; *n = "fake_kernel"; return 0; }
CUresult cuFuncGetName(const char **n, void *k) { T; *n = "fake_kernel"; return 0; }
/* a kernel's attributes: max threads per block, shared / constant / local bytes, registers, PTX and
 * binary versions, ..., max dynamic shared memory */
static int func_attr(int attr) {
  switch (attr) { case 0: return 1024; case 1: return 0; case 2: return 0; case 3: return 0; case 4: return 32;
                  case 5: return 90; case 6: return 90; case 8: return 232448; default: return 0; }
}
CUresult cuKernelGetAttribute(int *v, int attr, void *k, int dev) { T; *v = func_attr(attr); return 0; }
CUresult cuFuncGetAttribute(int *v, int attr, void *f) { T; *v = func_attr(attr); return 0; }
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned sh, void *st, void **params, void **extra) { T; launches++; return 0; }
CUresult cuLaunchKernelEx(const void *config, void *f, void **params, void **extra) { T; launches++; return 0; }
CUresult cuLinkCreate(unsigned n, void *o, void **ov, void **state) { T; *state = fresh(); return 0; }
CUresult cuLinkAddData(void *s, int type, void *data, size_t n, const char *name, unsigned no, void *o, void **ov) { T; return 0; }
CUresult cuLinkAddFile(void *s, int type, const char *path, unsigned no, void *o, void **ov) { T; return 0; }
CUresult cuLinkComplete(void *s, void **out, size_t *n) { T; *out = cubin; *n = sizeof cubin; return 0; }
CUresult cuLinkDestroy(void *s) { T; return 0; }
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *n, void *f, int bs, size_t sh) { T; *n = 2048 / (bs ? bs : 1); return 0; }
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *n, void *f, int bs, size_t sh, unsigned fl) { T; *n = 2048 / (bs ? bs : 1); return 0; }
CUresult cuStreamCreate(void **s, unsigned f) { T; *s = fresh(); return 0; }
CUresult cuStreamCreateWithPriority(void **s, unsigned f, int p) { T; *s = fresh(); return 0; }
CUresult cuStreamGetCtx(void *s, void **ctx) { T; *ctx = ctx_storage; return 0; }
CUresult cuStreamGetFlags(void *s, unsigned *f) { T; *f = 0; return 0; }
CUresult cuStreamGetPriority(void *s, int *p) { T; *p = 0; return 0; }
CUresult cuStreamGetId(void *s, unsigned long long *id) { T; *id = 0; return 0; }
CUresult cuEventCreate(void **e, unsigned f) { T; *e = fresh(); return 0; }
CUresult cuEventElapsedTime(float *ms, void *a, void *b) { T; *ms = 0.f; return 0; }
CUresult cuGetErrorString(int e, const char **s) { T; *s = e == 2 ? "out of memory" : "error (stand-in driver)"; return 0; }
CUresult cuGetErrorName(int e, const char **s) { T; *s = e == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : "CUDA_ERROR_UNKNOWN"; return 0; }
