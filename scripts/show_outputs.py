"""Print the text each code cell of an executed notebook printed."""

import sys

import nbformat

notebook = nbformat.read(sys.argv[1], as_version=4)
for index, cell in enumerate(notebook.cells):
    if cell.cell_type != "code":
        continue
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            text = output["text"].replace("\r", "\n")
        elif output.get("output_type") in ("execute_result", "display_data"):
            text = output.get("data", {}).get("text/plain", "")
        elif output.get("output_type") == "error":
            text = f"{output['ename']}: {output['evalue']}"
        else:
            continue
        print(f"[cell {index}] " + text.rstrip().replace("\n", f"\n[cell {index}] "))
