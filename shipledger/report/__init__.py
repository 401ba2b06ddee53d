"""Monthly compliance packs (`shipledger report`, docs/reports.md): the data files, the HTML
report with its charts, the signed manifest, and its verification."""
