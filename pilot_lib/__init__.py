"""pilot_lib: the tested core behind the agentic-pilot workbook notebooks.

Each phase of the playbook has a module here; the notebooks in ``notebooks/``
call these functions, show the results and explain them.
"""

import warnings

# pandera imports pyspark.pandas when pyspark is installed, and pyspark warns about
# pandas 3 on import; the workbook never uses pyspark.pandas, so the warning is noise.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
# ibis 12 touches pandas' deprecated 'future.infer_string' option on every pandas
# conversion; harmless, and it would clutter every notebook output.
warnings.filterwarnings("ignore", message="The 'future.infer_string' option is deprecated")
# ibis 12 calls duckdb 2's deprecated fetch_arrow_table(); the replacement is duckdb's to fix.
warnings.filterwarnings("ignore", message=".*fetch_arrow_table", category=DeprecationWarning)

__version__ = "0.1.0"
