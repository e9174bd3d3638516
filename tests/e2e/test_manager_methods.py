"""Every Manager method api.md names exists and is real; the smaller ones behave as written."""

from __future__ import annotations

import inspect

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine.core import runinfo
from tests.conftest import wait_connected

# The Manager methods named in the manager sections of the project's API reference
# (../shared/spec/api.md §3, 4.2, 6, 8.1–8.2, 9.2–9.3, 10, 11, 12, 14, 15), plus those issue 13
# lists; copied here because CI checks out the project alone.
API_METHODS = set("""
application_info block_host block_host_with_timeout cancel_all cancel_all_by_tag
cancel_by_category cancel_by_task_id cancel_by_task_tag check_library_exists
create_library_from_command create_library_from_functions
create_library_from_serverized_files declare_buffer declare_chirp declare_file
declare_minitask declare_poncho declare_starch declare_temp declare_untar declare_url
declare_xrootd disable_peer_transfers empty enable_disconnect_slow_workers
enable_disconnect_slow_workers_category enable_monitoring enable_peer_transfers
enable_tasks_cache fetch_file get_file_replica_count hungry initialize_categories
install_library log_debug_app log_txn_app map pair prune_file remove_file remove_library
set_catalog_servers set_category_autolabel_resource set_category_first_allocation_guess
set_category_max_concurrent set_category_mode set_category_resources_max
set_category_resources_min set_draining_by_hostname set_keepalive_interval
set_keepalive_timeout set_manager_preferred_connection set_min_task_id set_name
set_password set_password_file set_priority set_property set_resources_max
set_resources_min set_runtime_info_path set_scheduler stats_category status submit
summarize_workers task_state tasks_left_count tree_reduce tune unblock_host undeclare_file
undeclare_function update_catalog wait wait_for_tag wait_for_task_id workers_shutdown
""".split())

def test_every_manager_method_in_the_api_exists_and_is_not_a_placeholder():
    names = API_METHODS
    missing = sorted(n for n in names if not hasattr(vine.Manager, n))
    assert missing == []
    placeholders = sorted(n for n in names if callable(getattr(vine.Manager, n))
                          and "NotImplementedError" in inspect.getsource(getattr(vine.Manager, n)))
    assert placeholders == []


def test_set_runtime_info_path_places_later_managers(tmp_path, monkeypatch):
    monkeypatch.setattr(runinfo, "default_path", runinfo.default_path)  # restored after
    with vine.Manager(port=0, run_info_path=str(tmp_path / "first")) as m:
        m.set_runtime_info_path(str(tmp_path / "elsewhere"))
        assert m.runtime_directory.startswith(str(tmp_path / "first"))
        with pytest.raises(ValueError, match="non-empty"):
            m.set_runtime_info_path("")
    with vine.Manager(port=0) as later:
        assert later.runtime_directory.startswith(str(tmp_path / "elsewhere"))
        assert later.application_info() is None


def test_slow_tasks_move_to_another_worker_and_a_slow_worker_is_dropped(manager, workers,
                                                                        tmp_path):
    m = manager
    m.enable_disconnect_slow_workers(3)
    m.tune("option-blocklist-slow-workers-timeout", 1)  # all workers here share one host
    fast = workers.start(m, cores=1)
    wait_connected(m, 1)
    for _ in range(4):  # the category's average: 0.3 s
        m.submit(vine.Task("sleep 0.3"))
    while not m.empty():
        m.wait(5)
    slow = workers.start(m, cores=2)  # the workspace name tells the task where it runs
    wait_connected(m, 2)
    marker = str(slow.workspace)
    for i in range(3):
        t = vine.Task(f'case "$PWD" in {marker}*) sleep 60;; esac; echo done {i}')
        t.set_cores(1)
        t.set_scheduler("worst")  # the bigger (slow) worker first
        m.submit(t)
    done = []
    while len(done) < 3:
        t = m.wait(30)
        assert t is not None, "a slow task never came back"
        done.append(t)
    assert all(t.successful() for t in done)
    assert sorted(t.std_output for t in done) == ["done 0\n", "done 1\n", "done 2\n"]
    assert m.stats.workers_slow == 1
    assert m.stats.workers_connected == 1 and fast.poll() is None
    m._debug.flush()
    with open(f"{m.logging_directory}/debug") as f:
        assert "was slow twice: disconnected, host blocked for 1s" in f.read()
    with pytest.raises(TypeError, match="multiplier"):
        m.enable_disconnect_slow_workers("3")
