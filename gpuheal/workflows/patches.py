"""Which changes of the workflow code a run has: one patch per release stands for the patches before it.

Every `workflow.patched` that is true writes a marker into the run's history, and sdk-core upserts
TemporalChangeVersion beside it: two events per patch, in every run. So a release folds the patches
made before it into its own (CONTRIBUTING.md, Changing workflow code). Its patch is asked first in
every run of every workflow: a run begun under the release has all the folded changes without asking
(no marker, no upsert of its own); a run begun under an older release, whose history lacks the
release's marker, asks each folded patch as that release did, at the same point, and keeps that path
to its end (the SDK keeps a patch's answer for the whole run). A patch made after the release is asked
as usual, after the release's.
"""

from __future__ import annotations

from collections.abc import Iterable

from temporalio import workflow

# This release's patch: a run begun under it has every change made before it, and this release's own
# (one search-attribute upsert per activation, gpuheal.workflows.search_attributes.Published).
RELEASE = "gpuheal-0.2.0"


def begun_under_release() -> bool:
    """Whether the run began under this release. Asked first in the run's first activation (the first
    call records the marker; the SDK answers later calls from memory)."""
    return workflow.patched(RELEASE)


class Folded:
    """A workflow's patches made before the release, which the release's patch stands for."""

    def __init__(self, patches: Iterable[str]) -> None:
        self._patches = frozenset(patches)

    def patched(self, patch: str) -> bool:
        """Whether the run has the change behind `patch`, asked where `workflow.patched` would be (in
        the run's first activation): the release's patch first, then `patch` itself unless folded."""
        return (begun_under_release() and patch in self._patches) or workflow.patched(patch)
