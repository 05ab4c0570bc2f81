"""Reconstruct .proto sources from the serialized descriptors shipped in flwr's *_pb2.py.

Usage: /work/venvs/flwr/bin/python desc2proto.py OUTDIR name1 name2 ...
(names like fleet, message, ...). Also writes OUTDIR/flwr-1.42.0.fds.pb (FileDescriptorSet,
transitive closure) usable with prost_build::Config::file_descriptor_set_path + skip_protoc_run.
Comments are lost (descriptors carry no source info).
"""
import importlib, sys, os
from google.protobuf import descriptor_pb2 as d

T = d.FieldDescriptorProto
SCALAR = {T.TYPE_DOUBLE: "double", T.TYPE_FLOAT: "float", T.TYPE_INT64: "int64", T.TYPE_UINT64: "uint64",
          T.TYPE_INT32: "int32", T.TYPE_FIXED64: "fixed64", T.TYPE_FIXED32: "fixed32", T.TYPE_BOOL: "bool",
          T.TYPE_STRING: "string", T.TYPE_BYTES: "bytes", T.TYPE_UINT32: "uint32", T.TYPE_SFIXED32: "sfixed32",
          T.TYPE_SFIXED64: "sfixed64", T.TYPE_SINT32: "sint32", T.TYPE_SINT64: "sint64"}

def tname(f, pkg):
    if f.type in SCALAR:
        return SCALAR[f.type]
    n = f.type_name.lstrip(".")
    return n[len(pkg) + 1:] if n.startswith(pkg + ".") else n

def fopts(f):
    o = []
    if f.options.deprecated:
        o.append("deprecated = true")
    return f" [{', '.join(o)}]" if o else ""

def emit_enum(e, ind):
    out = [f"{ind}enum {e.name} {{"]
    for v in e.value:
        out.append(f"{ind}  {v.name} = {v.number};")
    out.append(f"{ind}}}")
    return out

def emit_msg(m, pkg, ind):
    out = [f"{ind}message {m.name} {{"]
    maps = {n.name: n for n in m.nested_type if n.options.map_entry}
    for e in m.enum_type:
        out += emit_enum(e, ind + "  ")
    for n in m.nested_type:
        if not n.options.map_entry:
            out += emit_msg(n, pkg, ind + "  ")
    real_oneofs = {}
    for f in m.field:
        if f.HasField("oneof_index") and not f.proto3_optional:
            real_oneofs.setdefault(f.oneof_index, []).append(f)
    done = set()
    for f in m.field:
        if f.HasField("oneof_index") and not f.proto3_optional:
            i = f.oneof_index
            if i in done:
                continue
            done.add(i)
            out.append(f"{ind}  oneof {m.oneof_decl[i].name} {{")
            for g in real_oneofs[i]:
                out.append(f"{ind}    {tname(g, pkg)} {g.name} = {g.number}{fopts(g)};")
            out.append(f"{ind}  }}")
            continue
        entry = f.type_name.split(".")[-1]
        if f.label == T.LABEL_REPEATED and f.type == T.TYPE_MESSAGE and entry in maps:
            k, v = maps[entry].field
            out.append(f"{ind}  map<{tname(k, pkg)}, {tname(v, pkg)}> {f.name} = {f.number}{fopts(f)};")
            continue
        lab = "repeated " if f.label == T.LABEL_REPEATED else ("optional " if f.proto3_optional else "")
        out.append(f"{ind}  {lab}{tname(f, pkg)} {f.name} = {f.number}{fopts(f)};")
    out.append(f"{ind}}}")
    return out

def emit_file(fd):
    pkg = fd.package
    out = ["// Reconstructed from the serialized descriptor in flwr==1.42.0 (PyPI wheel),",
           f"// module flwr/proto/{os.path.basename(fd.name).replace('.proto', '_pb2.py')}. Comments are not recoverable.",
           "// Original: Copyright Flower Labs GmbH, Apache License 2.0 (see ../../LICENSE).", "",
           f'syntax = "{fd.syntax or "proto2"}";', "", f"package {pkg};", ""]
    for dep in fd.dependency:
        out.append(f'import "{dep}";')
    if fd.dependency:
        out.append("")
    for s in fd.service:
        out.append(f"service {s.name} {{")
        for mth in s.method:
            cs = "stream " if mth.client_streaming else ""
            ss = "stream " if mth.server_streaming else ""
            out.append(f"  rpc {mth.name}({cs}{tname_s(mth.input_type, pkg)}) returns ({ss}{tname_s(mth.output_type, pkg)}) {{}}")
        out.append("}")
        out.append("")
    for e in fd.enum_type:
        out += emit_enum(e, "") + [""]
    for m in fd.message_type:
        out += emit_msg(m, pkg, "") + [""]
    return "\n".join(out)

def tname_s(n, pkg):
    n = n.lstrip(".")
    return n[len(pkg) + 1:] if n.startswith(pkg + ".") else n

def main():
    outdir = sys.argv[1]
    names = sys.argv[2:]
    seen, order = {}, []
    def add(modname):
        mod = importlib.import_module(modname)
        fd = d.FileDescriptorProto.FromString(mod.DESCRIPTOR.serialized_pb)
        if fd.name in seen:
            return
        for dep in fd.dependency:
            add(dep[:-len(".proto")].replace("/", ".") + "_pb2")
        seen[fd.name] = fd
        order.append(fd)
    for n in names:
        add(f"flwr.proto.{n}_pb2")
    for fd in order:
        p = os.path.join(outdir, fd.name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "w").write(emit_file(fd))
        print(p)
    fds = d.FileDescriptorSet(file=order)
    open(os.path.join(outdir, "flwr-1.42.0.fds.pb"), "wb").write(fds.SerializeToString())

main()
