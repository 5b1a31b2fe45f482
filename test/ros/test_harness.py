"""The harness's hold on a ROS domain: one per process, never shared by parallel runs, and the
clean-up of FastDDS files a finished run's domain was left with."""
import os
import subprocess
import sys

from spinn_ros.tools import harness as H


def test_parallel_processes_get_domains_of_their_own():
    mine = H.domain_id_for_run()
    assert mine == H.domain_id_for_run() and H.FIRST_DOMAIN <= mine < H.FIRST_DOMAIN + H.DOMAINS
    # children that stay alive while the next one picks: each holds its lock for its life
    code = "import sys; from spinn_ros.tools.harness import domain_id_for_run as d; print(d(), flush=True); " \
           "sys.stdin.read()"
    children = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(3)]
    try:
        domains = [int(c.stdout.readline()) for c in children]
    finally:
        for c in children:
            c.communicate("", timeout=30)
    assert len({mine, *domains}) == 4, (mine, domains)


def test_domain_port_files_are_the_domains_ports_and_mutexes():
    lo = 7400 + 250 * 20
    names = {f"fastdds_port{lo + 11}", f"sem.fastdds_port{lo + 11}_mutex", f"fastdds_port{lo + 250}",
             f"fastdds_port{lo - 1}", "fastdds_1a2b3c", f"fastrtps_port{lo + 13}", "other"}
    assert H.domain_port_files(names, 20) == {f"fastdds_port{lo + 11}", f"sem.fastdds_port{lo + 11}_mutex",
                                               f"fastrtps_port{lo + 13}"}


def test_leftovers_of_the_domain_nobody_holds_are_removed_and_nothing_else():
    domain = H.domain_id_for_run()
    lo = 7400 + 250 * domain
    before = H.fastdds_shm_files()
    unheld, held = H.SHM / f"fastdds_port{lo + 247}", H.SHM / f"fastdds_port{lo + 249}"
    other_domain = H.FIRST_DOMAIN if domain != H.FIRST_DOMAIN else H.FIRST_DOMAIN + 1
    other = H.SHM / f"fastdds_port{7400 + 250 * other_domain + 249}"
    for f in (unheld, held, other):
        f.write_bytes(b"x")
    fd = os.open(held, os.O_RDONLY)         # a live participant keeps its port open
    try:
        assert H.remove_domain_leftovers(before, domain) == [unheld.name]
        assert not unheld.exists() and held.exists() and other.exists()
    finally:
        os.close(fd)
        for f in (unheld, held, other):
            f.unlink(missing_ok=True)
