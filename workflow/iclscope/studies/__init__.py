"""Study drivers: read the extracted tables, run the analyses, write result tables and figures."""
