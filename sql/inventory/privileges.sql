-- The inventory role's rights on its tables (see sql/common/privileges.sql).
-- Products are seeded by the migrations; their stock only changes.
GRANT SELECT, UPDATE ON products TO :"role";
GRANT SELECT, INSERT, UPDATE ON reservations TO :"role";
