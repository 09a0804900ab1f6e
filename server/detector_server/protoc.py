"""Generate the Python stubs of protos/detector.proto: at build time (setup.py), and in the
test that fails when the installed stubs are stale against the .proto."""
import os

PROTO = "detector.proto"
STUBS = ("detector_pb2.py", "detector_pb2_grpc.py")


def generate(proto_dir, out_dir):
    """Write detector_pb2.py and detector_pb2_grpc.py for ``proto_dir/detector.proto``."""
    import grpc_tools
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    status = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
                          f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                          os.path.join(proto_dir, PROTO)])
    if status != 0:
        raise RuntimeError(f"protoc failed on {os.path.join(proto_dir, PROTO)} (exit {status})")
    # grpc_tools imports the messages as a top-level module; ours live in a package
    path = os.path.join(out_dir, STUBS[1])
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("import detector_pb2 as", "from . import detector_pb2 as"))
