"""Typed views of the main snapshot sections, for probes: ``sections.cache(snap)["workspaces"]``.

``Snapshot.data(name)`` returns the section's plain JSON (or ``{}`` when it was not gathered);
these say which shape that JSON has (fidoctor/snapshot/types.py), so a type checker catches a
probe reading a key no gatherer writes. Nothing is converted or copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from fidoctor.snapshot.types import (
    CacheFacts,
    GpuFacts,
    HostCompilerFacts,
    HostFacts,
    LocksFacts,
    ProcessesFacts,
    ServingFacts,
    TargetFacts,
    ToolchainFacts,
    TorchAbiFacts,
)

if TYPE_CHECKING:
    from fidoctor.snapshot import Snapshot


def target(snap: Snapshot) -> TargetFacts:
    return cast(TargetFacts, snap.data("target"))


def host(snap: Snapshot) -> HostFacts:
    return cast(HostFacts, snap.data("host"))


def cache(snap: Snapshot) -> CacheFacts:
    return cast(CacheFacts, snap.data("cache"))


def processes(snap: Snapshot) -> ProcessesFacts:
    return cast(ProcessesFacts, snap.data("processes"))


def locks(snap: Snapshot) -> LocksFacts:
    return cast(LocksFacts, snap.data("locks"))


def gpu(snap: Snapshot) -> GpuFacts:
    return cast(GpuFacts, snap.data("gpu"))


def host_compiler(snap: Snapshot) -> HostCompilerFacts:
    return cast(HostCompilerFacts, snap.data("host_compiler"))


def serving(snap: Snapshot) -> ServingFacts:
    return cast(ServingFacts, snap.data("serving"))


def toolchain(snap: Snapshot) -> ToolchainFacts:
    return cast(ToolchainFacts, snap.data("toolchain"))


def torch_abi(snap: Snapshot) -> TorchAbiFacts:
    return cast(TorchAbiFacts, snap.data("torch_abi"))
