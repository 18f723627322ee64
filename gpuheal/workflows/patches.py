"""Which changes of the workflow code a run has: one patch per release stands for the patches before it.

Every `workflow.patched` that is true writes a marker into the run's history, and sdk-core upserts
TemporalChangeVersion beside it: two events per patch, in every run. So each release folds the patches
made before it into a patch of its own (CONTRIBUTING.md, Changing workflow code). The releases'
patches are asked first in every run of every workflow, newest first, until one is true: that is the
release the run began under, and it has every change folded into that release or an older one without
asking (no marker, no upsert). A change made since is asked as usual, as is every change in a run begun
before the first release that folded (its history has no release's marker): such a run asks each patch
as its release did, at the same point, and keeps that path to its end (the SDK keeps a patch's answer
for the whole run).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from temporalio import workflow

RELEASE_0_2_0 = "gpuheal-0.2.0"
RELEASE_0_3_0 = "gpuheal-0.3.0"
# Each release's patch, newest first: a release puts its own in front.
RELEASES = (RELEASE_0_3_0, RELEASE_0_2_0)


def begun_under() -> str | None:
    """The patch of the release the run began under; None where it began before 0.2.0. Asked first,
    in the run's first activation: the first call records the marker, and the SDK answers later calls
    from memory."""
    return next((release for release in RELEASES if workflow.patched(release)), None)


def since(release: str) -> bool:
    """Whether the run began under `release` or a later one: what a release-wide change of `release`
    (one that changes commands for every run begun under it) goes behind. Comparing with `release`
    alone would turn it off for runs of the releases after it."""
    begun = begun_under()
    return begun is not None and RELEASES.index(begun) <= RELEASES.index(release)


class Folded:
    """A workflow's patches, by the release whose patch stands for them."""

    def __init__(self, by_release: Mapping[str, Iterable[str]]) -> None:
        # How old the release that folded each patch is (its place in RELEASES).
        self._age = {patch: RELEASES.index(release) for release, folded in by_release.items() for patch in folded}

    def patched(self, patch: str) -> bool:
        """Whether the run has the change behind `patch`; asked where `workflow.patched` would be (in
        the run's first activation)."""
        release = begun_under()
        if release is not None and self._age.get(patch, -1) >= RELEASES.index(release):
            return True  # folded into the run's release, or an older one
        return workflow.patched(patch)
