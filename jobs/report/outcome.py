"""What became of a job, in one word (``launch.py list``) and one sentence (``launch.py status``).

Slurm's own records come first: squeue while the job is queued or running, then sacct's final
state (CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, ...), and only then the run directory
(``attempts.jsonl``, ``state.json``), which says what the training did but not how the job ended:
a job cancelled while it waited to be requeued still has "requeue 1 of 5" as its last attempt
record and "checkpointed" in state.json. :func:`describe` is a pure function of those records
(tested without a cluster); :func:`gather` asks Slurm for them. No torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jobs import rundir, runs, slurm
from jobs.rundir import RunDir


@dataclasses.dataclass(frozen=True)
class Outcome:
    state: str  # one word: pending, requeued, running, ending, finished, stopped, cancelled, timeout, ...
    headline: str  # one sentence saying what happened and, where something is left to do, what
    active: bool  # queued, running or about to run again


def _resume_phrase(step: int | None) -> str:
    return f"the run is saved at step {step}" if step else "nothing was saved yet"


def _unrecorded_end(ends: list[dict], starts: list[dict]) -> str:
    """'' unless this job's latest attempt started but wrote no end record (SIGKILL, out of memory,
    the batch host lost): then a clause saying so, so an earlier attempt's reason is not shown as its."""
    if not starts:
        return ""
    latest = starts[-1].get("restart")
    if ends and ends[-1].get("restart") == latest:
        return ""
    number = latest + 1 if isinstance(latest, int) else len(starts)
    return (f"attempt {number} ended without an end record (killed: SIGKILL, out of memory or a lost node?), "
            "so nothing requeues it")


@dataclasses.dataclass(frozen=True)
class _Records:
    """What :func:`describe` reads, with the words it derives from them."""

    job_id: str | None
    acct: dict
    run_state: dict
    ends: list[dict]
    resume_step: int | None
    unrecorded: str
    sacct_silent: bool
    resubmit: str

    @property
    def last(self) -> dict:
        return self.ends[-1] if self.ends and not self.unrecorded else {}

    @property
    def status(self) -> str | None:
        return self.run_state.get("status")

    @property
    def step(self) -> int | None:
        return rundir.state_step(self.run_state)

    @property
    def acct_state(self) -> str:
        return self.acct.get("State", "") or ""

    @property
    def word(self) -> str:
        return self.acct_state.split()[0] if self.acct_state else ""

    @property
    def saved(self) -> str:
        return _resume_phrase(self.resume_step)


def describe(job_id: str | None, queue_state: str | None, queue_reason: str | None, acct: dict | None,
             run_state: dict, ends: list[dict], resume_step: int | None, *, starts: list[dict] | None = None,
             sacct_silent: bool = False, resubmit: str = "resubmit with the same --run-dir") -> Outcome:
    """The outcome from squeue's state and reason (None when the job is not in the queue), sacct's
    latest record (None without accounting), state.json, this job's ``end`` and ``start`` attempt
    records and the step a restart resumes from; ``sacct_silent``: sacct did not answer; ``resubmit``: how
    to continue the run (:func:`jobs.runs.resubmit_advice`)."""
    r = _Records(job_id, acct or {}, run_state, ends, resume_step, _unrecorded_end(ends, starts or []),
                 sacct_silent, resubmit)
    if queue_state is None and r.word in slurm.ACTIVE:  # sacct knows more than squeue (e.g. just requeued)
        queue_state, queue_reason = r.word, r.acct.get("Reason")
    if queue_state:
        return _in_queue(r, queue_state, queue_reason)
    return _ended_in_slurm(r) or _unknown_to_slurm(r)


def _in_queue(r: _Records, queue_state: str, queue_reason: str | None) -> Outcome:
    reason = f", {queue_reason}" if queue_reason and queue_reason != "None" else ""
    if queue_state == "PENDING":
        if r.last.get("action") in ("requeue", "slurm-requeue") or queue_reason == "BeginTime":
            said = str(r.last.get("reason") or "")
            for tail in ("; it resumes from the last save", ": it resumes from the last save"):
                said = said.removesuffix(tail)  # the headline says where it resumes, once
            why = f" after {said}" if said else ""
            return Outcome("requeued", f"requeued, waiting to start again (squeue PENDING{reason}){why}; "
                           f"it resumes at step {r.resume_step or 0}", True)
        if queue_reason and queue_reason.startswith("JobHeld"):  # JobHeldUser / JobHeldAdmin
            return Outcome("held", f"held: it will not start until released (squeue PENDING{reason}); "
                           f"scontrol release {r.job_id}", True)
        return Outcome("pending", f"queued, not started yet (squeue PENDING{reason})", True)
    if queue_state == "RUNNING":
        return Outcome("running", f"running (squeue RUNNING); the run is at step {r.step if r.step is not None else 0}",
                       True)
    if queue_state == "COMPLETING":
        return Outcome("ending", "ending: its processes are exiting (squeue COMPLETING)", True)
    return Outcome(queue_state.lower(), f"squeue {queue_state}{reason}", True)


def _ended_in_slurm(r: _Records) -> Outcome | None:
    """The outcome from sacct's final word (or a finish record when sacct has none); None when neither says."""
    word, last, step = r.word, r.last, r.step
    if word == "COMPLETED" or (not word and last.get("action") == "finish"):
        if r.status == "finished" or last.get("action") == "finish":
            epochs = f"{r.run_state.get('epochs')} epochs, " if r.run_state.get("epochs") is not None else ""
            return Outcome("finished", f"finished: {epochs}step {step if step is not None else '-'}", False)
        if last.get("action") == "stop":
            return Outcome("stopped", f"stopped, not requeued: {last.get('reason')}", False)
        return Outcome("completed", f"the job completed but the run is {r.status or 'not started'} at step "
                       f"{step if step is not None else '-'}", False)
    if word == "CANCELLED":
        while_pending = slurm.never_started(r.acct)
        when = " while it waited to be requeued" if while_pending and r.ends else (" before it started"
                                                                                    if while_pending else "")
        return Outcome("cancelled", f"cancelled{when} ({r.acct_state.lower()}); {r.saved}: {r.resubmit} to continue",
                       False)
    if word == "TIMEOUT":
        return Outcome("timeout", "the time limit passed before a save and requeue (sacct TIMEOUT); "
                       f"{r.saved}: raise --signal-lead above the time a save takes and {r.resubmit}", False)
    if word == "PREEMPTED":
        return Outcome("preempted", f"preempted and not requeued by Slurm (sacct PREEMPTED); {r.saved}: {r.resubmit}",
                       False)
    if word == "NODE_FAIL":
        return Outcome("node_fail", "a node failed and Slurm did not requeue the job (sacct NODE_FAIL); "
                       f"{r.saved}: {r.resubmit}", False)
    if word in slurm.FINAL_WORDS:
        why = f": {last.get('reason')}" if last.get("reason") else ""
        if r.unrecorded:
            why = (f": {r.unrecorded}; {r.saved}: the reason is in the log "
                   f"(python launch.py logs {r.job_id} --err), then {r.resubmit}")
        return Outcome(slurm.FINAL_WORDS[word], f"{word.lower()} (sacct {r.acct_state}, "
                       f"exit {r.acct.get('ExitCode', '-')}){why}", False)
    if word:
        return Outcome(word.lower(), f"sacct {r.acct_state}", word in slurm.ACTIVE)
    return None


def _unknown_to_slurm(r: _Records) -> Outcome:
    """Not in the queue and no sacct word: sacct is silent, or Slurm forgot the job (no accounting, or long
    ago): the run directory's word."""
    last, status, step = r.last, r.status, r.step
    if r.sacct_silent and r.job_id is not None:  # not in the queue, and how it ended cannot be asked
        what = r.unrecorded or (f"its last attempt record says {last.get('action')}: {last.get('reason')}" if last
                                else f"state.json says {status or 'nothing yet'}")
        return Outcome("unknown", f"not in the queue; how it ended is unknown: {slurm.SACCT_SILENT} ({what}); "
                       f"ask again once sacct answers (sacct -j {r.job_id})", False)
    if r.unrecorded:
        return Outcome("ended", f"ended: {r.unrecorded}; Slurm no longer knows the job; {r.saved}: "
                       f"see python launch.py logs {r.job_id} --err, then {r.resubmit}", False)
    if last.get("action") == "stop":
        return Outcome("stopped", f"stopped, not requeued: {last.get('reason')}", False)
    if last.get("action") in ("requeue", "slurm-requeue"):
        return Outcome("requeued", f"requeued ({last.get('reason')}), but Slurm no longer shows the job; "
                       f"{r.saved}", False)
    if status in ("finished", "failed", "diverged"):
        return Outcome(status, f"{status} at step {step if step is not None else '-'} (state.json; Slurm no "
                       "longer knows the job)", False)
    if r.job_id is None:
        return Outcome(status or "unknown", f"no job recorded; state.json says {status or 'nothing'}", False)
    return Outcome(status or "submitted", f"Slurm does not know job {r.job_id} (no accounting here); state.json "
                   f"says {status or 'nothing yet'}", False)


def gather(job_id: str | None, run_dir: Path, queue_state: tuple[str, str] | None = None,
           acct: dict | None = None, ask_slurm: bool = True, resume: bool = True,
           sacct_silent: bool = False) -> Outcome:
    """:func:`describe` with the records read now (``queue_state``/``acct`` when already known;
    ``resume=False`` skips reading the checkpoint's step, for the one word of ``list``)."""
    if ask_slurm and job_id and slurm.available():
        if queue_state is None:
            queue_state = slurm.queue_state_reason(job_id)
        if acct is None:
            history = slurm.attempt_history(job_id)
            acct, sacct_silent = (history[-1] if history else None), history is None
    run = RunDir(run_dir)
    attempts = [a for a in run.attempts() if a.get("job_id") == job_id]
    ends = [a for a in attempts if a.get("event") == "end"]
    starts = [a for a in attempts if a.get("event") == "start"]
    state = run.state()
    step = run.resume_step() if resume else rundir.state_step(state)
    queue_word, reason = queue_state or (None, None)
    return describe(job_id, queue_word, reason, acct, state, ends, step, starts=starts, sacct_silent=sacct_silent,
                    resubmit=runs.resubmit_advice(run_dir))
