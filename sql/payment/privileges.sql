-- The payment role's rights on its table (see sql/common/privileges.sql).
GRANT SELECT, INSERT, UPDATE ON payments TO :"role";
