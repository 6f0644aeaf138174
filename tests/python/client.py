"""The official Kubernetes Python client against Capstan: create, then list by label.

Usage: python3 client.py KUBECONFIG
"""
import sys

from kubernetes import client, config


def main(kubeconfig: str) -> None:
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="from-python", labels={"made-by": "python"}),
        data={"greeting": "hello"},
    )
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid, "the server assigns a uid"
    listed = core.list_namespaced_config_map("default", label_selector="made-by=python")
    names = [item.metadata.name for item in listed.items]
    assert names == ["from-python"], names
    assert listed.items[0].data == {"greeting": "hello"}
    print("ok", created.metadata.resource_version)


if __name__ == "__main__":
    main(sys.argv[1])
