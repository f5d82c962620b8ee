<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PHP demo: form</title>
<link rel="stylesheet" href="/assets/style.css">
</head>
<body>
<h1>PHP demo</h1>
<p>This page was produced by PHP <?php echo htmlspecialchars(PHP_VERSION, ENT_QUOTES, 'UTF-8'), "\n"; ?>
behind Apache; khttpd-front only relayed it.</p>
<form method="post" action="demo2.php">
  <label for="name">Your name</label>
  <input type="text" id="name" name="name" maxlength="100" autofocus>
  <button type="submit">Say hello</button>
</form>
<p><a href="/">Back to the start page</a></p>
</body>
</html>
