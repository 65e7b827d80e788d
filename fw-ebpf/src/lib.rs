// This library target exists so that `fw-user` can name `fw-ebpf` as a
// build dependency (cargo then rebuilds it on change); the programs are in
// the `fw` binary target.
#![no_std]
