"""The PostgreSQL warehouse (schema `dw`): its migrations (`migrations`), the read-only BI role (`roles`), the load
of each `dw` table as the catalogue describes it (`loads`), and the gold → dw mirror (`mirror`, `csv_copy`)."""
