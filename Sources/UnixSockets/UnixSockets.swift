// The library's one import: the blocking sockets (UnixSocketsCore) and the async face, framing, server and
// relay built on them (UnixSocketsAsync). The layers below, the syscall layer (UnixSocketsSystem) and the C
// shim, are the library's own business and are not re-exported.
@_exported public import UnixSocketsAsync
@_exported public import UnixSocketsCore
