"""The official Python client's in-cluster configuration, with a pod's
files and environment: it reads the token and CA bundle from the given files
(copied out of the pod's projected volume) and the API's address from the
given environment (the pod's KUBERNETES_SERVICE_HOST and _PORT), and is run
inside the pod's network namespace. Prints what it may and may not do.
Usage: incluster.py TOKEN_FILE CA_FILE ENV_JSON NAMESPACE"""
import json
import sys

from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader


def main(token_file, ca_file, env_json, namespace):
    with open(env_json) as f:
        environ = json.load(f)
    InClusterConfigLoader(
        token_filename=token_file, cert_filename=ca_file, environ=environ
    ).load_and_set()
    core = client.CoreV1Api()
    pods = core.list_namespaced_pod(namespace)
    print("pods:", ",".join(sorted(p.metadata.name for p in pods.items)))
    for what, call in [
        ("secrets", lambda: core.list_namespaced_secret(namespace)),
        ("all-pods", lambda: core.list_pod_for_all_namespaces()),
    ]:
        try:
            call()
            print(f"{what}: allowed")
        except client.ApiException as e:
            print(f"{what}: {e.status}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
