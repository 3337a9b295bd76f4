"""SlurmEngine's pure parts: squeue lines -> JobStatus, the sbatch arguments, the batch script,
the allow-list, and how command failures are classified (a recorded runner, no cluster)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.glue.engine import EngineUnavailable, JobRejected, JobRequest, JobStatus, Phase, describe_exit
from agent.glue.slurm import SlurmEngine, SlurmSettings, batch_script, exit_status, parse_squeue_line

T = "a" * 32
COMMENT = f"shipyard task={T} attempt=2 key=AK1"


@pytest.mark.parametrize("state, reason, restarts, code, phase, why", [
    ("PENDING", "Resources", "0", "0:0", Phase.PENDING, "Resources"),
    ("PENDING", "None", "0", "0:0", Phase.PENDING, ""),
    ("PENDING", "BeginTime", "1", "0:0", Phase.INFRA, "REQUEUED by Slurm (restart 1; last reason BeginTime)"),
    ("RUNNING", "None", "0", "0:0", Phase.RUNNING, ""),
    ("COMPLETED", "None", "0", "0:0", Phase.SUCCEEDED, ""),
    ("FAILED", "NonZeroExitCode", "0", "768", Phase.FAILED, "NonZeroExitCode"),
    ("OUT_OF_MEMORY", "OutOfMemory", "0", "0:125", Phase.FAILED, "OUT_OF_MEMORY"),
    ("TIMEOUT", "TimeLimit", "0", "0:15", Phase.FAILED, "TIMEOUT"),
    ("CANCELLED+", "None", "0", "0:15", Phase.CANCELLED, "CANCELLED"),
    ("NODE_FAIL", "NodeDown", "0", "0:0", Phase.INFRA, "NODE_FAIL"),
    ("PREEMPTED", "None", "0", "0:0", Phase.INFRA, "PREEMPTED"),
])
def test_squeue_states_map_onto_phases(state, reason, restarts, code, phase, why):
    line = f"12 |shipyard-{T} |{state} |{reason} |{COMMENT} |{restarts} |{code} |/out/x.out |"
    status = parse_squeue_line(line)
    assert status is not None
    assert (status.phase, status.reason, status.task_id, status.attempt, status.key) == (phase, why, T, 2, "AK1")
    assert status.job_id == "12" and status.output == "/out/x.out"


@pytest.mark.parametrize("field, code, said", [
    # squeue's exit_code is the batch shell's raw wait status (recorded from Slurm 22.05)
    ("0", 0, "exit code 0"),
    ("768", 3, "exit code 3"),                                   # exit 3
    ("9", 137, "exit code 137 (signal 9, SIGKILL)"),             # the batch shell itself killed
    ("35072", 137, "exit code 137 (signal 9, SIGKILL)"),         # the shell exited 137: its child was killed
    # sacct's ExitCode is exit:signal
    ("3:0", 3, "exit code 3"),
    ("0:15", 143, "exit code 143 (signal 15, SIGTERM)"),
    ("", None, "no exit code"),
    ("N/A", None, "no exit code"),
])
def test_slurm_exit_codes_read_as_the_shell_would_say_them(field, code, said):
    assert exit_status(field) == code
    assert describe_exit(code) == said


def test_an_exit_code_past_any_signal_is_just_a_number():
    assert describe_exit(255) == "exit code 255"


@pytest.mark.parametrize("line", [
    f"12|someone-else|RUNNING|None|{COMMENT}|0|0:0|/o|",      # not our name
    f"12|shipyard-{T}|RUNNING|None|(null)|0|0:0|/o|",          # our name, not our comment
    "garbage",
])
def test_jobs_that_are_not_the_glues_are_left_alone(line):
    assert parse_squeue_line(line) is None


_KILLED = "slurmstepd-vm: error: StepId=5.batch exceeded memory limit (669794304 > 629145600), being killed\n"
_CANCELLED = "slurmstepd-vm: error: *** JOB 5 ON vm CANCELLED AT 2026-12-07T22:04:10 ***\n"
_NOTICE = "slurmstepd-vm: error: Exceeded job memory limit\n"


@pytest.mark.parametrize("case, output, reason", [
    # slurmstepd's own line is written before the kill; the controller's notice may come later or never
    ("both lines", _KILLED + _NOTICE + _CANCELLED, "OUT_OF_MEMORY"),
    ("the notice not yet there (CI, stop 37)", "loading\n" + _KILLED + _CANCELLED, "OUT_OF_MEMORY"),
    ("only the notice", _NOTICE, "OUT_OF_MEMORY"),
    ("virtual memory", "slurmstepd: error: Job 5 exceeded virtual memory limit (9 > 8), being killed\n",
     "OUT_OF_MEMORY"),
    ("the task's own words", "print: we exceeded memory limit (1 > 0) in a toy\nTraceback ...\n", "NonZeroExitCode"),
    ("an ordinary failure", "Traceback (most recent call last):\nValueError: no\n", "NonZeroExitCode"),
])
def test_a_job_killed_over_its_memory_is_told_from_its_output(tmp_path, case, output, reason):
    out = tmp_path / "job.out"
    out.write_text("x" * 20000 + "\n" + output)        # the tail read (16 KiB) holds what counts
    engine = SlurmEngine(SlurmSettings(partition="batch", output_dir=tmp_path))
    status = JobStatus(job_id="5", task_id=T, phase=Phase.FAILED, reason="NonZeroExitCode", exit_code=0,
                       output=str(out))
    assert engine._why_failed(status).reason == reason, case


def request(**fields) -> JobRequest:
    base = dict(task_id=T, queue="gpu", command=("shipyard", "execute", "--id", T, "--attempt", "2"),
                env={"CLEARML_API_ACCESS_KEY": "AK1", "CLEARML_API_SECRET_KEY": "s3cret it's"}, gpus=2, cpus=4,
                memory_mb=2048, time_limit_s=61, attempt=2, options=("--constraint=a100",))
    base.update(fields)
    return JobRequest(**base)  # type: ignore[arg-type]


def test_sbatch_arguments_carry_resources_name_comment_and_no_secret(tmp_path):
    engine = SlurmEngine(SlurmSettings(partition="gpu", account="ml", output_dir=tmp_path, options=("--qos=hi",)))
    args = engine.sbatch_args(request())
    assert args[:2] == ["sbatch", "--parsable"]
    for word in (f"--job-name=shipyard-{T}", f"--comment=shipyard task={T} attempt=2 key=AK1", "--partition=gpu",
                 "--account=ml", "--gres=gpu:2", "--cpus-per-task=4", "--mem=2048M", "--time=2", "--qos=hi",
                 "--constraint=a100", f"--output={tmp_path}/shipyard-{T}-a2.out"):
        assert word in args
    assert not any("s3cret" in word for word in args)


def test_the_batch_script_exports_the_key_pins_gpus_and_execs_the_node_command():
    script = batch_script(request())
    assert "export CLEARML_API_SECRET_KEY='s3cret it'\"'\"'s'" in script
    assert "CUDA_VISIBLE_DEVICES" in script and "IDX" in script
    assert script.rstrip().endswith(f"exec shipyard execute --id {T} --attempt 2")
    assert "CUDA_VISIBLE_DEVICES" not in batch_script(request(gpus=0))


def test_the_pinning_snippet_expands_slurm_index_ranges(tmp_path):
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/bash\necho '   Nodes=vm CPU_IDs=0-1 Mem=10 GRES=gpu:3(IDX:0-1,3)'\n")
    fake.chmod(0o755)
    script = batch_script(request(command=("bash", "-c", "echo pinned=$CUDA_VISIBLE_DEVICES"), env={}))
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SLURM_JOB_ID": "5"}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "pinned=0,1,3"


def recorded(answers: dict[str, tuple[int, str, str]], stdin: list[str] | None = None):
    def run(argv, stdin_text=None):
        if stdin is not None and stdin_text is not None:
            stdin.append(stdin_text)
        code, out, err = answers.get(argv[0], (0, "", ""))
        return subprocess.CompletedProcess(list(argv), code, out, err)
    return run


def test_options_gpus_and_refusals_are_named_and_an_unreachable_controller_is_not_a_refusal(tmp_path):
    engine = SlurmEngine(SlurmSettings(partition="gpu", output_dir=tmp_path, allowed_options=("--constraint",)),
                         run=recorded({"sinfo": (0, "gpu:4(S:0)\n", ""),
                                       "sbatch": (1, "", "sbatch: error: Invalid account or account/partition")}))
    engine.check(request())
    with pytest.raises(JobRejected, match="'--nodelist'.*--allow-option"):
        engine.check(request(options=("--nodelist=n1",)))
    with pytest.raises(JobRejected, match="8 GPU.*more than 4"):
        engine.check(request(gpus=8))
    with pytest.raises(JobRejected, match="sbatch refused the job: Invalid account"):
        engine.submit(request())
    assert not list(Path(tmp_path).glob(".*.sh"))     # the script (with the key) never touches the disk
    down = SlurmEngine(SlurmSettings(partition="gpu", output_dir=tmp_path),
                       run=recorded({"squeue": (1, "", "squeue: error: Unable to contact slurm controller")}))
    with pytest.raises(EngineUnavailable, match="Unable to contact"):
        down.statuses()


def test_the_batch_script_goes_to_sbatch_on_its_standard_input(tmp_path):
    scripts: list[str] = []
    engine = SlurmEngine(SlurmSettings(partition="gpu", output_dir=tmp_path / "out"),
                         run=recorded({"sbatch": (0, "42;cluster\n", "")}, scripts))
    assert engine.submit(request()) == "42"
    assert scripts == [batch_script(request())] and (tmp_path / "out").is_dir()
    assert not [p for p in (tmp_path / "out").iterdir()]     # no script file, not even for a moment
