"""What a command shows a person: library records in, text, Markdown or JSON out; cli.py prints it.

explain (`meshc explain`) reads the lowered mesh; diff_report, diff_text and diff_markdown format the
records of compiler.diff (`meshc diff`, `meshc check`). Feature packages with a model of their own
(drift, rollout, graph) keep their formatters beside it.
"""
