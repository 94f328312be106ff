"""heareval results: reading result trees and score files (`results`), comparison tables in
Markdown and CSV (`comparison`), PNG charts (`chart`), the run
summary (`summary`), table helpers (`tables`), and what `hear-matpac demo` shows (`demo`)."""
