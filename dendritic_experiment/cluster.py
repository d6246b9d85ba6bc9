"""Several runs at once (--parallel-runs), each a Ray task, on one machine's GPUs or a Ray cluster (README.md, "Several
GPUs or machines (Ray)"). Only main.py imports this module, with --parallel-runs 1 or more: nothing else imports Ray.
The driver (main.py's process) keeps the order and reuses finished runs as the sequential path does. What the code
relies on in Ray is noted where it does, checked with Ray 2.60 on a CPU machine.
"""
import contextlib
import os
import socket
import sys
import time
import uuid
from types import SimpleNamespace

from dendritic_experiment.data import DATASETS, dataset_folder
from dendritic_experiment.experiment import Experiment, Progress, plan_runs
from dendritic_experiment.utils import ExperimentError, try_lock

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # workers import the package from it
MAX_RETRIES = 2  # reruns of a run whose worker or node died; each resumes from the run's checkpoint
LOCK_WAIT = 120  # seconds a rerun waits for the lock of a worker only presumed dead (a lost node)
WORKER_SETUP_HOOK = ""  # "module.function" each worker calls first (tests: tiny models, another user)


def train_in_parallel(settings, experiment, plan, tracking=None, trial=None):
    """Fill experiment's results with every run of the plan (each after the runs it starts from), at most
    settings.parallel_runs at once. trial: the sweep trial's folder the plan was made for (tracking.sweep_trial),
    handed to every task: workers of a `ray start` cluster lack this process's environment, which names the trial."""
    progress = Progress(settings, plan, tracking)
    waiting = reuse_finished(settings, experiment, plan, progress)
    if not waiting:
        return  # everything was finished: no Ray at all
    dataset_folder(settings.data_dir, DATASETS[settings.dataset])  # downloaded once, here, when missing
    ray = start_ray(settings)
    try:
        check_results_dir(ray, os.path.abspath(settings.results_dir))
        gpus = settings.gpus_per_run if settings.device != "cpu" and ray.cluster_resources().get("GPU") else 0
        # On this machine the cores are shared out among the runs at once; on a cluster a run takes one.
        cpus = 1 if settings.ray_address else max(1, (os.cpu_count() or 1) // settings.parallel_runs)
        check_fits_a_node(ray, gpus)
        # max_calls=1: a fresh worker process per run, as perforatedai keeps global state per process. A worker
        # that dies (killed, node lost; sys.exit too) is retried in a new process; an exception raised by the
        # task is not (retry_exceptions=False).
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1, max_retries=MAX_RETRIES,
                          retry_exceptions=False)(train_task)
        # Workers elsewhere do not start in this folder; --retrain was done here, once (a retried
        # worker must resume, not start over).
        worker_settings = SimpleNamespace(**dict(vars(settings), retrain=False,
                                                 results_dir=os.path.abspath(settings.results_dir),
                                                 data_dir=os.path.abspath(settings.data_dir)))
        schedule(ray, task, worker_settings, trial, experiment, waiting, progress)
    finally:
        ray.shutdown()


def reuse_finished(settings, experiment, plan, progress):
    """Take the finished runs (or, with --retrain, forget them); returns the runs left to train. With precision auto
    on a cluster (--ray-address) a finished run goes to a worker, which compares its precision (Experiment.cached)."""
    waiting, here = [], not (settings.ray_address and settings.precision == "auto")
    for run in plan:
        if settings.retrain:
            experiment.forget(run)
        elif not any(upstream in waiting for upstream in run.starts_from):  # else it starts from a run to train
            if (result := experiment.cached(run, here)) is not None:
                experiment.results[run] = result
                progress.done(run, result, trained=False)
                continue
        waiting.append(run)
    return waiting


def schedule(ray, task, worker_settings, trial, experiment, waiting, progress):
    """Submit each waiting run once the runs it starts from are done, at most parallel_runs at once;
    after a failure nothing new starts, the runs under way finish, and the first error is raised."""
    running, failures, results = {}, [], experiment.results
    while running or (waiting and not failures):
        for run in list(waiting):
            if failures or len(running) >= worker_settings.parallel_runs:
                break
            if all(upstream in results for upstream in run.starts_from):
                waiting.remove(run)
                upstream_results = {upstream.name: results[upstream] for upstream in run.starts_from}
                running[task.remote(worker_settings, trial, run.name, run.seed, upstream_results)] = run
        if not running:
            raise ExperimentError(f"{waiting[0]}: a run it starts from did not finish")
        [finished], _ = ray.wait(list(running), num_returns=1)
        run = running.pop(finished)
        try:
            result, where, trained = ray.get(finished)
        except ray.exceptions.RayError as error:
            failures.append(failure(ray, error, run))
            print(f"failed: {failures[-1]}" + ("; waiting for the runs under way" if running else ""), file=sys.stderr)
            continue
        results[run] = result
        progress.done(run, result, trained, where)
    if failures:
        raise ExperimentError(failures[0] if len(failures) == 1
                              else f"{len(failures)} runs failed; first: {failures[0]}")


def failure(ray, error, run):
    """One line for a run that failed: its own message when it refused for a user's reason (not retried), else what
    went wrong (a fault of the code also prints the worker's traceback). Ray raises RayTaskError (.cause: the task's
    exception) or, once the retries are spent, WorkerCrashedError."""
    if not isinstance(error, ray.exceptions.RayTaskError):  # its worker or node died MAX_RETRIES + 1 times
        return (f"{run}: its Ray worker died {MAX_RETRIES + 1} times ({type(error).__name__}); "
                "run the command again to resume it from its checkpoint")
    if isinstance(error.cause, RuntimeError):  # train_task's: a NaN loss, no memory, ...
        return f"{error.cause} (seed {run.seed})"
    print(error, file=sys.stderr)
    return f"{run}: {type(error.cause).__name__}: {error.cause}"


def check_fits_a_node(ray, gpus):
    """A run asking for more GPUs than any machine has would wait for ever: refuse it instead."""
    most = max((node["Resources"].get("GPU", 0) for node in ray.nodes() if node["Alive"]), default=0)
    if gpus > most:
        raise ExperimentError(f"--gpus-per-run {gpus:g} is not allowed: no machine of the Ray cluster has more than "
                              f"{most:g} GPU(s)")


def start_ray(settings):
    """settings.ray_address: empty starts a Ray on this machine; auto or host:port joins a cluster."""
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # read at import: plain "(train_task pid=...)" prefixes
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every worker line, not folded into "repeated 2x"
    import ray

    # Workers import the project as the package dendritic_experiment (nothing of ours under a generic name).
    path = os.pathsep.join([PACKAGE_PARENT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    runtime_env = {"env_vars": {"PYTHONPATH": path}}
    if WORKER_SETUP_HOOK:
        runtime_env["worker_process_setup_hook"] = WORKER_SETUP_HOOK
    options = dict(include_dashboard=False, logging_level="ERROR", runtime_env=runtime_env)
    # "local" always starts a new Ray (None would join a `ray start` cluster found here); "auto" joins one or
    # fails at once; num_cpus and num_gpus may only be given to a local Ray.
    if settings.ray_address:
        check_reachable(settings.ray_address)
        options.update(address=settings.ray_address)
    else:
        options.update(address="local", num_cpus=max(settings.parallel_runs, os.cpu_count() or 1),
                       num_gpus=0 if settings.device == "cpu" else None)
    try:
        ray.init(**options)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise ExperimentError(f"--ray-address {settings.ray_address or '(a local Ray)'}: "
                              f"{str(error).splitlines()[0]} (a cluster started with token authentication "
                              "also needs RAY_AUTH_MODE=token here)") from None
    return ray


def check_reachable(address, seconds=5):
    """Ray waits many minutes for a head that does not answer: refuse at once instead."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except (OSError, ValueError):
        raise ExperimentError(f"--ray-address {address}: nothing answers there within {seconds} s; give the "
                              "address `ray start --head` printed, or auto on a machine of the cluster") from None


def check_results_dir(ray, folder):
    """Every node that can run a task writes a file into the results folder, and this process must
    read it back: the folder must be one that all of them share."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def probe(folder, token):
        path = os.path.join(folder, f".ray-probe-{token}")
        try:
            with open(path, "w") as f:
                f.write(token)
        except OSError as error:
            raise RuntimeError(f"a worker on {socket.gethostname()} cannot write there ({error.strerror})") from None
        return path

    for node in [node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU")]:
        token = uuid.uuid4().hex
        strategy = NodeAffinitySchedulingStrategy(node, soft=False)
        try:
            path = ray.get(probe.options(scheduling_strategy=strategy).remote(folder, token), timeout=300)
            with open(path) as f:
                problem = None if f.read() == token else f"node {node[:8]} sees another folder by that name"
            os.remove(path)
        except ray.exceptions.RayTaskError as error:
            problem = str(error.cause)
        except ray.exceptions.GetTimeoutError:  # an OSError too: caught first
            problem = f"a worker on node {node[:8]} did not answer within 300 s"
        except OSError:
            problem = f"a file a worker on node {node[:8]} wrote there is not visible here"
        if problem:
            raise ExperimentError(f"--results-dir {folder}: every Ray worker must be able to write it and this "
                                  f"machine to read what they wrote (a shared filesystem); {problem}")


def train_task(settings, trial, run_name, seed, upstream_results):
    """In a worker: train one run of the plan for trial, resuming it from its checkpoint (a retry), or reuse it when
    finished (a retry, or a run the driver left to compare its precision here). upstream_results: {name: result} of
    the runs it starts from. Errors leave as RuntimeError: a task's exception class must import in the driver."""
    import torch

    # Ray sets OMP_NUM_THREADS to the task's CPUs, and torch follows it, unless it started before (a setup hook).
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = socket.gethostname() + (f" GPU {gpu}" if gpu else "") + f" (pid {os.getpid()})"
    print(f"{run_name} (seed {seed}): started on {where}", file=sys.stderr, flush=True)
    try:
        # The worker's own plan: its folders are under the absolute results folder it was given.
        run = next(run for run in plan_runs(settings, trial) if (run.name, run.seed) == (run_name, seed))
        experiment = Experiment(settings)
        experiment.results.update({upstream: upstream_results[upstream.name] for upstream in run.starts_from})
        os.makedirs(run.folder, exist_ok=True)
        with run_lock(run.folder, run_name):
            return experiment.result(run), where, run in experiment.trained
    except ExperimentError as error:  # a user's reason (a NaN loss, no memory): not retried
        raise RuntimeError(str(error)) from None
    except SystemExit as error:  # Ray would take an exit for a dead worker, and retry it
        raise RuntimeError(f"{run_name}: exited with status {error.code}") from None


@contextlib.contextmanager
def run_lock(folder, run_name):
    """One worker per run: a retry whose first worker is only presumed dead (a lost node) waits for
    its lock, and gives up after LOCK_WAIT seconds. The lock file holds the training process's pid."""
    path, deadline = os.path.join(folder, ".train.lock"), time.time() + LOCK_WAIT
    while (handle := try_lock(path)) is None:
        if time.time() > deadline:
            raise ExperimentError(f"{run_name}: another worker still trains it ({path})")
        time.sleep(1)
    with handle:
        yield
