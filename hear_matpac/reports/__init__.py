"""heareval results: reading result trees and score files (`results`), comparison tables in
Markdown and CSV (`comparison`), PNG charts (`chart`), the run summary (`summary`), the sweep
table, JSON and plot (`sweep`), the report-file writer (`tables`), and what `hear-matpac demo`
shows (`demo`)."""
