<?php
$name = isset($_POST['name']) && is_string($_POST['name']) ? trim($_POST['name']) : '';
$addr = isset($_SERVER['REMOTE_ADDR']) ? $_SERVER['REMOTE_ADDR'] : 'unknown';
function h($s) { return htmlspecialchars($s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8'); }
?>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PHP demo: greeting</title>
<link rel="stylesheet" href="/assets/style.css">
</head>
<body>
<h1>PHP demo</h1>
<?php if ($name === ''): ?>
<p>No name was posted. <a href="demo1.php">Fill in the form</a> first.</p>
<?php else: ?>
<p>Hello, <strong><?php echo h($name); ?></strong>!</p>
<?php endif; ?>
<p>Your address as Apache sees it: <code><?php echo h($addr); ?></code></p>
<p><a href="demo1.php">Back to the form</a> · <a href="/">Start page</a></p>
</body>
</html>
