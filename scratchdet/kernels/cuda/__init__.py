"""The CUDA kernels (`numba.cuda.jit`): the GPU twins of the CPU kernels, same names, same arguments.

Read in this order: `common` (launch geometry, work buffers, views), `reduce` (the shared-memory tree sum),
`gemm` (the tiled matrix multiply every heavy layer uses), `conv_gemm` (the same multiply reading a
convolution's im2col columns straight from the image), `nn` (layers and losses, the twin of
`scratchdet.nn.functional` and `scratchdet.nn.losses`), `optim` (SGD and Adam updates), `boxes`
(IoU, encode / decode, the bitmask NMS) and `proposals`. Nothing here is called directly: a Numba
device array handed to the public functions is dispatched here (`scratchdet.backend.is_cuda_array`).
How the host drives the GPU, last: `launch` (every kernel is declared with `launch.jit`, Numba's
`cuda.jit` with a shorter path for the launches after the first) and `memory` (the pool of device
blocks every array here comes from).

`NUMBA_ENABLE_CUDASIM=1` (set before numba is imported) runs every kernel in Numba's simulator on
the CPU, one Python thread per GPU thread: slow, but a debugger steps through it.
"""
