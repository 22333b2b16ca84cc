"""``kubesight cluster up | down | status``: the local Kubernetes control plane of ``deploy/cluster/launcher.py``.

``up`` builds the pinned binaries once (~8 min on 2 cores, needs Go) and starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok nodes detached from the shell; it prints the
kubeconfig and token file.  ``down`` stops it; ``status`` says what runs and how much memory it takes.
Missing Go or a failed build is one line on stderr (exit 2) that says what to do.
"""

from __future__ import annotations

import sys


def register(sub, group) -> None:
    g = group("cluster", "the local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok nodes)")
    up = g.add_parser("up", help="build (once) and start the local control plane; print its kubeconfig and token file")
    up.add_argument("--name", default="default", help="cluster name (its run folder; default: %(default)s)")
    up.add_argument("--nodes", type=int, default=3, help="kwok nodes to create (default: %(default)s)")
    up.set_defaults(func=_up)
    down = g.add_parser("down", help="stop the local control plane")
    down.add_argument("--name", default="default")
    down.set_defaults(func=_down)
    st = g.add_parser("status", help="is the local control plane running; memory per component")
    st.add_argument("--name", default="default")
    st.set_defaults(func=_status)


def _fail(exc: Exception) -> int:
    print(f"kubesight: cluster: {exc}", file=sys.stderr)
    return 2


def _up(args) -> int:
    from deploy.cluster import launcher

    try:
        c = launcher.start(args.name, nodes=args.nodes)
    except launcher.ClusterError as exc:
        return _fail((str(exc).splitlines() or [""])[0])  # start-up failures add a log tail: the first line names it
    print(f"server:     {c.server}\nkubeconfig: {c.kubeconfig}\ntoken file: {c.run_dir / 'admin.token'}\n"
          f"etcd:       {c.etcd_endpoint}\nexport KUBECONFIG={c.kubeconfig}")
    return 0


def _down(args) -> int:
    from deploy.cluster import launcher

    print(f"cluster '{args.name}' {'stopped' if launcher.stop(args.name) else 'was not running'}")
    return 0


def _status(args) -> int:
    from deploy.cluster import launcher

    c = launcher.status(args.name)
    if c is None:
        print(f"cluster '{args.name}' is not running", file=sys.stderr)
        return 1
    rss = c.rss_mb()
    for comp, up in c.health().items():
        print(f"{comp:<24} {'running' if up else 'DEAD':<8} pid {c.pids[comp]:<8} {rss[comp]:>7.0f} MB")
    print(f"{'total':<24} {'':<8} {'':<12} {sum(rss.values()):>7.0f} MB\nserver:     {c.server}\n"
          f"kubeconfig: {c.kubeconfig}\ntoken file: {c.run_dir / 'admin.token'}")
    return 0 if c.alive() else 1
