"""The official Kubernetes Python client against a Skiff server: list and watch
pods, create a ConfigMap. Usage: client_check.py KUBECONFIG"""
import sys
import threading

from kubernetes import client, config, watch


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    assert core.list_namespaced_pod("default").items == []
    names = [n.metadata.name for n in core.list_namespace().items]
    assert "default" in names and "kube-system" in names, names

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="from-python"), data={"k": "v"})
    created = core.create_namespaced_config_map("default", cm)
    assert created.metadata.uid and created.metadata.resource_version
    got = core.read_namespaced_config_map("from-python", "default")
    assert got.data == {"k": "v"}, got.data

    seen = []
    ready = threading.Event()

    def watcher():
        w = watch.Watch()
        ready.set()
        for ev in w.stream(core.list_namespaced_pod, "default", timeout_seconds=10):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["object"].metadata.name == "watched-pod":
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()
    ready.wait()
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="watched-pod"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="acc/hello:v1")]),
    )
    import time
    time.sleep(1)
    core.create_namespaced_pod("default", pod)
    t.join(15)
    assert ("ADDED", "watched-pod") in seen, seen
    pods = core.list_namespaced_pod("default", label_selector="")
    assert [p.metadata.name for p in pods.items] == ["watched-pod"]
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
