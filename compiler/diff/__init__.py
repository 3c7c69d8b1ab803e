"""Semantic diff of two builds: which spec files, targets, documents and files change, and what it costs.

Results are frozen records (`records`); compiler/commands/diff_report.py, diff_text.py and
diff_markdown.py format them. Modules by what they do: `values` diffs plain data, `files` one output
file's two versions, `targets` two builds target by target, `kube` lists the Kubernetes objects left
behind, `revisions` reads git revisions and diffs their builds, `output` compares an output tree on disk
with what the spec renders (`meshc check`). Import from the module: this package imports none of them,
so `meshc check` reaches the output comparison without loading git.
"""
