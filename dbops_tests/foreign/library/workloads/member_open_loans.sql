-- The library's own read: a member's open loans.
\set member random(1, 400)
SELECT count(*) FROM lending.loans WHERE member_id = :member AND status = 'out';
